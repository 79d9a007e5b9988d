"""README.md's `mlflow models serve` command, run as written, against the store the track stage leaves in a project
whose dataset is params.yaml's: the model it names must exist and answer, so the docs cannot drift again."""

import base64
import json
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from pipeline.files import read_json
from pipeline.layout import PARAMS_FILE, DatasetLayout
from pipeline.predict import from_model_dir, predict
from tests.helpers import REPO
from tests.helpers.params import renamed, repo_params, write_params
from tests.helpers.pipeline import stage_command
from tests.helpers.processes import env, start, stop
from tests.helpers.servers import free_port, wait_healthy

pytestmark = pytest.mark.servers


def readme_commands(needle: str) -> list[str]:
    """The commands in README.md's bash blocks that contain `needle`, backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if needle in line]


@pytest.fixture(scope="module")
def project(tiny_project, tmp_path_factory):
    """A copy of tiny_project renamed to params.yaml's dataset, tracked by the stage's CLI as `dvc repro` runs it
    (no MLFLOW_TRACKING_URI; DVC_ROOT is the project, so the store is <project>/mlflow.db); its root."""
    name = repo_params()["data"]["name"]
    root = shutil.copytree(tiny_project.root, tmp_path_factory.mktemp("readme") / "project", symlinks=True)
    (root / "data" / tiny_project.cfg.data.name).rename(root / "data" / name)  # its manifest's paths are relative
    write_params(root / PARAMS_FILE, renamed(tiny_project.params, name))
    module, args = stage_command("track", DatasetLayout.of(name, root))
    environ = {k: v for k, v in env(DVC_ROOT=str(root)).items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", module, "--params", str(root / PARAMS_FILE), *args]
    done = subprocess.run(cmd, cwd=root, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def served(project):
    """The README's serve command in the project root, through bash as a user pastes it; yields its URL."""
    (command,) = readme_commands("mlflow models serve")
    port = free_port()
    # The one change: the documented port (5001) may be taken on this machine, so a free one replaces it.
    command, swapped = re.subn(r"--port \d+", f"--port {port}", command)
    assert swapped == 1, command
    log = project / "serve.log"
    environ = {k: v for k, v in env().items() if k != "MLFLOW_TRACKING_URI"}  # the command sets its own
    proc = start(["bash", "-c", command], project, log, environ)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/ping", proc, log, timeout=150)
        yield url
    finally:
        stop(proc)  # its own group: bash, the CLI and its uvicorn worker


def test_the_readme_serve_command_answers_with_a_class(tiny_project, project, served):
    """One image POSTed as docs/predict.md's curl sends it (dataframe_split, base64 in column `image`)."""
    image = sorted(tiny_project.layout.raw.rglob("*.jpg"))[0]
    rows = [[base64.b64encode(image.read_bytes()).decode()]]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    request = urllib.request.Request(f"{served}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        (answer,) = json.loads(response.read())["predictions"]
    head = read_json(DatasetLayout.of(repo_params()["data"]["name"], project).mlflow_record)["champion"]["head"]
    (want,) = predict([str(image)], from_model_dir(tiny_project.layout.model_dir(head), tiny_project.cfg))
    assert answer["error"] is None and answer["class"] == want.label
    assert answer["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
