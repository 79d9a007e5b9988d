"""Code checks: params.yaml is validated once, and a bad value names its key."""
import pytest

from pipeline.config import ConfigError, load_config, parse_config
from tests.conftest import REPO, TINY_PARAMS


def test_repo_params_load():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.backbone.name == "mobilenet"
    assert "dense.learning_rate" in cfg.flat()


@pytest.mark.parametrize(
    "section, key, value, expect",
    [
        ("backbone", "image_size", 16, "backbone.image_size"),
        ("backbone", "name", "resnet", "backbone.name"),
        ("dense", "learning_rate", -1.0, "dense.learning_rate"),
        ("dense", "epochs", "ten", "dense.epochs"),
        ("dense", "surprise", 1, "dense.surprise"),
        ("split", "test_from_validation", 1.5, "split.test_from_validation"),
        ("data", "sha256", "abc", "data.sha256"),
    ],
)
def test_bad_value_is_rejected_naming_the_key(section, key, value, expect):
    raw = {k: dict(v) for k, v in TINY_PARAMS.items()}
    raw[section][key] = value
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert expect in str(err.value)


def test_unknown_backbone_lists_allowed_values():
    raw = {k: dict(v) for k, v in TINY_PARAMS.items()}
    raw["backbone"]["name"] = "vgg16"
    with pytest.raises(ConfigError, match="mobilenet"):
        parse_config(raw)


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="extras"):
        parse_config({**TINY_PARAMS, "extras": {}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_split_shares_must_leave_training_data():
    raw = {k: dict(v) for k, v in TINY_PARAMS.items()}
    raw["split"].update(validation=0.6, test=0.5)
    with pytest.raises(ConfigError, match="split"):
        parse_config(raw)
