"""Track stage without a pipeline run: where runs go, fail-fast on a dead server, DVC tags, champion choice."""
import hashlib
import json
import os
import runpy
import socket
import sys
import time

import pytest
import yaml

from pipeline.config import Config
from pipeline.evaluate import HEADS
from pipeline.tracking import pick_champion
from pipeline.tracking_context import HTTP_DEFAULTS, PROBE_TIMEOUT_S, lock_tags, tracking_uri
from tests.conftest import REPO, TINY_PARAMS, free_port, write_params

LOCK = {"schema": "2.0", "stages": {"prepare": {"cmd": "python -m pipeline.prepare", "outs": [{"md5": "a"}]},
                                    "train@dense": {"cmd": "python -m pipeline.train_dense"}}}


def test_default_store_is_sqlite_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri() == f"sqlite:///{REPO / 'mlflow.db'}"  # absolute: every tool finds the same store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # `dvc exp run --temp` points it at the real project
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("listening", [False, True], ids=["refused", "never-answers"])
def test_unreachable_server_fails_fast_naming_the_uri(tmp_path, monkeypatch, capsys, listening):
    """`python -m pipeline.tracking` as DVC runs it (in this process: TensorFlow is imported once). The probe
    comes before any input is read, so the inputs need not exist."""
    out = tmp_path / "mlflow.json"
    params = {**TINY_PARAMS, "data": {"name": "s", "url": "s.zip"}}
    argv = ["tracking", "--params", str(write_params(tmp_path / "params.yaml", params)), "--out", str(out),
            *(arg for flag in ("download-info", "prepare-summary", "features", "manifest", "reports", *HEADS)
              for arg in (f"--{flag}", str(tmp_path / flag)))]
    monkeypatch.setattr(sys, "argv", argv)
    for key in HTTP_DEFAULTS:  # the CLI sets them: restored to unset afterwards
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as sock:
        if listening:  # the kernel accepts connections into the backlog; nothing ever replies
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        uri = f"http://127.0.0.1:{sock.getsockname()[1] if listening else free_port()}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        start = time.monotonic()
        with pytest.raises(SystemExit) as exit_:
            runpy.run_module("pipeline.tracking", run_name="__main__")
    assert time.monotonic() - start < PROBE_TIMEOUT_S + 3
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and f"error: MLflow tracking server {uri} is unreachable" in stderr, stderr
    assert "Traceback" not in stderr and not out.exists()
    assert {k: os.environ[k] for k in HTTP_DEFAULTS} == HTTP_DEFAULTS  # lowered for a server dying mid-run


def test_lock_tags_hash_each_stage_entry_except_the_running_one(tmp_path, monkeypatch):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump(LOCK))
    monkeypatch.setenv("DVC_STAGE", "prepare")  # as DVC sets it: this entry is the previous execution's
    entry = json.dumps(LOCK["stages"]["train@dense"], sort_keys=True).encode()
    assert lock_tags(lock) == {"dvc.stage.train_dense.md5": hashlib.md5(entry).hexdigest()}  # `@`: not a tag char
    assert lock_tags(tmp_path / "missing.lock") == {}


@pytest.mark.parametrize("accuracy, current, promoted", [
    ({"dense": 0.8, "finetune": 0.9}, None, "finetune"),
    ({"dense": 0.9, "finetune": 0.9}, None, "dense"),  # tie within a run: the cheaper model
    ({"dense": 0.8, "finetune": 0.9}, 0.85, "finetune"),
    ({"dense": 0.8, "finetune": 0.9}, 0.9, None),  # tie with the champion: it stays
    ({"dense": 0.8, "finetune": 0.7}, 0.95, None),
])
def test_pick_champion(accuracy, current, promoted):
    assert pick_champion(accuracy, current) == promoted


def test_track_stage_depends_on_every_params_section():
    """It logs them all, so a change to any of them must re-run it."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["track"]
    assert stage["params"] == list(Config.model_fields)
