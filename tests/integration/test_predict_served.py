"""The served image model behind a real `mlflow models serve`: base64 image files in, class names out."""

import base64
import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.predict import from_model_dir, predict
from tests.helpers.processes import start, stop
from tests.helpers.servers import free_port, wait_healthy
from tests.helpers.tracking import SERVED

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def served(served_store, tmp_path_factory):
    """`mlflow models serve` on models:/SERVED@champion of conftest's served_store; yields its URL."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": served_store,  # uvicorn is started by name: the venv's bin on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{SERVED}@champion",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--env-manager",
            "local",
        ],
        log.parent,
        log,
        env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/ping", proc, log, timeout=150)
        yield url
    finally:
        stop(proc)  # its own group: the CLI and its uvicorn worker


def test_served_model_answers_over_http(tiny_project, served):
    """POST base64 image files to /invocations: one answer per row, a corrupt row gets its error."""
    images = sorted(tiny_project.layout.raw.rglob("*.jpg"))[:3]
    rows = [[base64.b64encode(p.read_bytes()).decode()] for p in images] + [[base64.b64encode(b"junk").decode()]]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    request = urllib.request.Request(f"{served}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answers = json.loads(response.read())["predictions"]
    expected = predict(
        [str(p) for p in images], from_model_dir(tiny_project.layout.model_dir("finetune"), tiny_project.cfg)
    )
    assert len(answers) == 4
    for got, want in zip(answers, expected):
        assert got["class"] == want.label and got["error"] is None
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
    assert answers[3]["class"] is None and "not an image" in answers[3]["error"]
