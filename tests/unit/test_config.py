"""Code checks: params.yaml is validated once, a bad value names its key, and no key has a default."""

import pytest

from pipeline.config import ConfigError, load_config, parse_config
from tests.helpers import REPO
from tests.helpers.params import tiny_config, tiny_params


def test_repo_params_load():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.backbone.name == "mobilenet"
    assert "dense.learning_rate" in cfg.flat()


def test_tiny_params_are_complete_and_tiny():
    cfg = parse_config(tiny_params())
    assert set(cfg.flat()) == set(load_config(REPO / "params.yaml").flat())
    assert cfg.backbone.image_size == 32 and cfg.dense.epochs == 6


@pytest.mark.parametrize(
    "section, key, value, expect",
    [
        ("backbone", "image_size", 16, "backbone.image_size"),
        ("backbone", "name", "resnet", "backbone.name"),
        ("dense", "learning_rate", -1.0, "dense.learning_rate"),
        ("dense", "epochs", "ten", "dense.epochs"),
        ("dense", "surprise", 1, "dense.surprise"),
        ("split", "test_from_validation", 1.5, "split.test_from_validation"),
        ("data", "sha256", "abc", "datasets.synthetic.sha256"),  # a dataset's own key, named where it is set
    ],
)
def test_bad_value_is_rejected_naming_the_key(section, key, value, expect):
    raw = tiny_params({section: {key: value}})
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert expect in str(err.value)


def _dotted_keys(params: dict, prefix: str = "") -> list[str]:
    return [
        k
        for key, value in params.items()
        for k in (_dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])
    ]


# A dataset's sha256 / size pins may be left out (null); which dataset is the default: tests/unit/test_datasets.py.
OPTIONAL = ("datasets.synthetic.sha256", "datasets.synthetic.size", "data.name")


@pytest.mark.parametrize("key", [k for k in _dotted_keys(tiny_params()) if k not in OPTIONAL])
def test_a_missing_key_is_an_error_naming_it(key):
    """No defaults in code: params.yaml is the one place a value is set."""
    raw = tiny_params()
    *sections, leaf = key.split(".")
    node = raw
    for section in sections:
        node = node[section]
    del node[leaf]
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert f"{key}: Field required" in str(err.value)


def test_unknown_backbone_lists_allowed_values():
    with pytest.raises(ConfigError, match="mobilenet"):
        parse_config(tiny_params({"backbone": {"name": "vgg16"}}))


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="extras"):
        parse_config({**tiny_params(), "extras": {}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_split_shares_must_leave_training_data():
    with pytest.raises(ConfigError, match="split"):
        parse_config(tiny_params({"split": {"validation": 0.6, "test": 0.5}}))


def test_ensemble_seeds_stay_in_range():
    with pytest.raises(ConfigError, match="seed \\+ ensemble - 1 must be at most 2147483647"):
        tiny_config({"dense": {"seed": 2**31 - 2, "ensemble": 3}})
    assert tiny_config({"dense": {"seed": 2**31 - 2, "ensemble": 2}}).dense.seed == 2**31 - 2
