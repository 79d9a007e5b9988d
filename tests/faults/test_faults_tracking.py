"""Fault suite, tracking server: a tracking server that is down or hung fails the track stage within seconds,
naming the URI, before any input is read."""

import os
import runpy
import socket
import sys
import time

import pytest

from pipeline.tracking.store import HTTP_DEFAULTS, PROBE_TIMEOUT_S
from tests.helpers.params import tiny_params, write_params
from tests.helpers.servers import free_port


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("listening", [False, True], ids=["refused", "never-answers"])
def test_unreachable_server_fails_fast_naming_the_uri(tmp_path, monkeypatch, capsys, listening):
    """`python -m pipeline.stages.track` as DVC runs it (in this process: TensorFlow is imported once). The probe
    comes before any input is read, so the inputs need not exist."""
    out = tmp_path / "mlflow.json"
    params = write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "s", "url": "s.zip"}}))
    argv = ["track", "--params", str(params), "--data", str(tmp_path / "data" / "s"), "--out", str(out)]
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
            runpy.run_module("pipeline.stages.track", run_name="__main__")
    assert time.monotonic() - start < PROBE_TIMEOUT_S + 3
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and f"error: MLflow tracking server {uri} is unreachable" in stderr, stderr
    assert "Traceback" not in stderr and not out.exists()
    assert {k: os.environ[k] for k in HTTP_DEFAULTS} == HTTP_DEFAULTS  # lowered for a server dying mid-run
