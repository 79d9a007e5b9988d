"""Per-run overrides of params.yaml: checked against the schema before anything runs, written into a checkout's
params.yaml typed, its comments kept."""

import pytest

from flows.overrides import (
    apply_overrides,
    effective_config,
    effective_configs,
    expand_grid,
    parse_assignment,
    parse_value,
    write_overrides,
)
from pipeline.config import ConfigError, load_params
from tests.helpers.params import tiny_params, write_params


def test_overrides_are_checked_before_anything_runs(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "orchestrated", "url": "unused.zip"}}))
    cfg = effective_config(tmp_path, {"dense.learning_rate": 0.5, "dense.activation": "gelu"})
    assert (cfg.dense.learning_rate, cfg.dense.activation, cfg.dense.units) == (0.5, "gelu", 16)
    for typo in ({"dense.learnig_rate": 0.1}, {"dense.dropout": 1.5}, {"data.name.x": 1}):
        with pytest.raises(ConfigError):
            effective_config(tmp_path, typo)
    assert expand_grid({"dense.units": [8, 16], "dense.dropout": [0.1]}) == [
        {"dense.units": 8, "dense.dropout": 0.1},
        {"dense.units": 16, "dense.dropout": 0.1},
    ]


def test_apply_overrides_copies_and_sets_nested_keys():
    params = {"finetune": {"augment": {"flip": True}, "epochs": 8}}
    out = apply_overrides(params, {"finetune.augment.flip": False, "finetune.epochs": 2})
    assert out == {"finetune": {"augment": {"flip": False}, "epochs": 2}}
    assert params["finetune"]["augment"]["flip"] is True  # the original is untouched


def test_command_line_values_keep_their_types():
    assert [parse_value(v) for v in ("1e-4", "64", "true", "null", "relu")] == [1e-4, 64, True, None, "relu"]
    assert parse_assignment(" dense.units = 128 ") == ("dense.units", "128")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignment("dense.units")
    with pytest.raises(ConfigError):
        expand_grid({"dense.units": []})


def test_an_override_may_add_a_dataset_and_is_checked_with_it(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "first", "url": "first.zip"}}))
    configs = effective_configs(tmp_path, {"datasets.second.url": "/data/second.tgz"})
    assert [(c.data.name, c.data.url) for c in configs] == [("first", "first.zip"), ("second", "/data/second.tgz")]
    with pytest.raises(ConfigError, match="datasets.second.sha256"):
        effective_configs(tmp_path, {"datasets.second.url": "x.zip", "datasets.second.sha256": "abc"})
    only = effective_configs(tmp_path, {"datasets.second.url": "/data/second.tgz"}, "second")
    assert [c.data.name for c in only] == ["second"]
    with pytest.raises(ConfigError, match="--dataset 'third' is not one of datasets: first, second"):
        effective_configs(tmp_path, {"datasets.second.url": "/data/second.tgz"}, "third")


def test_overrides_are_written_typed_into_the_params_file_with_its_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dense:\n  learning_rate: 0.001  # the peak\n  activation: relu\n")
    write_overrides(path, {"dense.learning_rate": 1e-5, "dense.activation": "gelu", "datasets.second.url": "/d.tgz"})
    assert path.read_text() == (
        "dense:\n  learning_rate: 1e-05  # the peak\n  activation: gelu\ndatasets:\n  second:\n    url: /d.tgz\n"
    )
    assert load_params(path)["dense"]["learning_rate"] == 1e-5  # a float to DVC's YAML 1.2, as the stages read it
