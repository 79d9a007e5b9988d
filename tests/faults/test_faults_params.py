"""Fault suite, params: a bad params.yaml stops every stage CLI before any work, with a message naming the key
and what is allowed, no traceback, and nothing written."""

import runpy
import subprocess
import sys

import pytest

from pipeline.tracking.store import HTTP_DEFAULTS
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env

STAGE_ARGS = {  # every stage, with outputs (execution records included) under out/, which must stay absent
    "source": ["--out", "out/source.json"],
    "download": ["--out", "out/raw", "--info", "out/download.json", "--execution", "out/execution/download.json"],
    "prepare": ["--raw", "raw", "--out", "out/prepared", "--summary", "out/prepare.json"],
    "extract": ["--manifest", "prepared/manifest.csv", "--out", "out/features", "--execution", "out/x/extract.json"],
    "train_dense": ["--features", "features", "--out", "out/dense", "--execution", "out/x/train_dense.json"],
    "train_finetune": [
        "--manifest",
        "prepared/manifest.csv",
        "--dense-model",
        "m.keras",
        "--out",
        "out/ft",
        "--execution",
        "out/x/train_finetune.json",
    ],
    "evaluate": ["--features", "f", "--manifest", "m.csv", "--dense", "d", "--finetune", "t", "--out", "out/rep"],
    "track": ["--data", "data/s", "--out", "out/mlflow.json"],
}


def _bad_params(tmp_path, section, key, value):
    return write_params(tmp_path / "bad.yaml", tiny_params({section: {key: value}}))


def _start(stage, params, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", f"pipeline.stages.{stage}", "--params", str(params), *STAGE_ARGS[stage]],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_rejected(status, stderr, cwd, *expect):
    assert status == 2, stderr
    assert "Traceback" not in stderr and "\nerror: " in f"\n{stderr}", stderr
    for text in expect:
        assert text in stderr, stderr
    assert not (cwd / "out").exists()


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("stage", STAGE_ARGS)
def test_every_stage_cli_rejects_bad_params_before_any_work(tmp_path, monkeypatch, capsys, stage):
    """Each module run as `python -m pipeline.stages.<stage>` (in this process: TensorFlow is imported once)."""
    params = _bad_params(tmp_path, "backbone", "name", "resnet50")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [stage, "--params", str(params), *STAGE_ARGS[stage]])
    for key in HTTP_DEFAULTS:  # the track CLI sets them: restored to unset afterwards
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(f"pipeline.stages.{stage}", run_name="__main__")
    _assert_rejected(
        exit_.value.code, capsys.readouterr().err, tmp_path, "backbone.name", "allowed: 'mobilenet'", "got 'resnet50'"
    )


@pytest.mark.parametrize(
    "section, key, value, expect",
    [
        ("backbone", "image_size", 16, ["backbone.image_size", "greater than or equal to 32", "got 16"]),
        ("dense", "learning_rate", -0.001, ["dense.learning_rate", "greater than 0", "got -0.001"]),
        ("finetune", "epochs", "ten", ["finetune.epochs", "valid integer", "got 'ten'"]),
        ("dense", "learning_rat", 0.1, ["dense.learning_rat", "Extra inputs are not permitted"]),
        ("backbone", "alpha", 0.3, ["backbone.alpha", "0.25", "1.0"]),
        # strict types: text is not a number, true is not an integer, "yes" is not a bool
        ("dense", "learning_rate", "0.01", ["dense.learning_rate", "quoted text is not a number", "got '0.01'"]),
        ("dense", "epochs", True, ["dense.epochs", "valid integer", "got True"]),
        # (as DVC reads params.yaml, YAML 1.2: yes/off written unquoted are text too, refused, never a bool)
        ("evaluate", "tta_flip", "yes", ["evaluate.tta_flip", "valid boolean", "only true and false", "got 'yes'"]),
        ("dense", "flip", "off", ["dense.flip", "valid boolean", "only true and false", "got 'off'"]),
        ("dense", "seed", -1, ["dense.seed", "greater than or equal to 0", "got -1"]),
        ("split", "seed", 2**32, ["split.seed", "less than or equal to 2147483647"]),
    ],
)
def test_bad_value_names_key_and_allowed_values(tmp_path, section, key, value, expect):
    """A real process: exit status 2 and the message, nothing else."""
    proc = _start("prepare", _bad_params(tmp_path, section, key, value), tmp_path)
    _, stderr = proc.communicate(timeout=60)
    _assert_rejected(proc.returncode, stderr, tmp_path, *expect)


def test_unreadable_params_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("dense: [unclosed\n")
    proc = _start("prepare", tmp_path / "bad.yaml", tmp_path)
    _, stderr = proc.communicate(timeout=60)
    _assert_rejected(proc.returncode, stderr, tmp_path, "bad.yaml: not valid YAML")
    proc = _start("prepare", tmp_path / "missing.yaml", tmp_path)
    _, stderr = proc.communicate(timeout=60)
    _assert_rejected(proc.returncode, stderr, tmp_path, "missing.yaml: parameters file not found")
