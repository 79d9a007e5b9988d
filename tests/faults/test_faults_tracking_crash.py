"""Fault suite, tracking after a crash: the track stage killed -9 mid-run leaves RUNNING runs and a registered
version behind; its rerun marks them FAILED and deletes that version. A server that dies mid-run fails the stage
with the one-line unreachable error. Each test has its own `mlflow server`, so only these runs are in it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.tracking.lineage import COMMIT_TAG, EXECUTION_TAG, run_name
from tests.helpers.processes import env, kill_when, start, stop
from tests.helpers.servers import start_mlflow_server

pytestmark = pytest.mark.servers


def _track(project, tmp_path: Path, url: str, log: str) -> subprocess.Popen:
    """`python -m pipeline.stages.track` as dvc.yaml runs it, on the tiny project's outputs, against `url`."""
    cmd = [sys.executable, "-m", "pipeline.stages.track", "--params", str(project.params_file)]
    cmd += ["--data", str(project.layout.root), "--lock", str(project.lock), "--out", str(tmp_path / "mlflow.json")]
    return start(cmd, project.root, tmp_path / log, env(MLFLOW_TRACKING_URI=url))


def _runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _versions(client: MlflowClient, name: str) -> list:
    return client.search_model_versions(f"name = '{name}-classifier'")


def _every(seconds: float, check):
    """`check`, polled no faster than every `seconds`: the server and the stage share two cores with the poller."""

    def ready() -> bool:
        time.sleep(seconds)
        return check()

    return ready


@pytest.fixture
def server(tmp_path):
    proc, url = start_mlflow_server(tmp_path)
    yield proc, url
    stop(proc, timeout=15)


def test_a_rerun_after_kill_9_converges(tiny_project, tmp_path, server):
    _, url = server
    client, name = MlflowClient(url), tiny_project.cfg.data.name
    # Killed once the dense head's version is registered: the parent and the finetune child are RUNNING.
    crashed = _track(tiny_project, tmp_path, url, "crashed.log")
    registered = _every(0.2, lambda: bool(_versions(client, name)))
    assert kill_when(crashed, registered, timeout=90), (tmp_path / "crashed.log").read_text()
    left = _runs(client, name)
    names = {
        what: run_name({COMMIT_TAG: tiny_project.commit}, head) for what, head in ((name, None), ("dense", "dense"))
    }
    assert {r.info.run_name for r in left} >= set(names.values())
    # The dense child may have finished just before the kill: it is the crashed execution's all the same.
    assert {r.info.status for r in left if r.info.run_name == names[name]} == {"RUNNING"}
    assert len(_versions(client, name)) == 1

    rerun = _track(tiny_project, tmp_path, url, "rerun.log")
    assert rerun.wait(timeout=120) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    runs = _runs(client, name)
    assert len({r.data.tags[EXECUTION_TAG] for r in runs}) == 1  # the rerun is the same execution
    assert sorted(r.info.status for r in runs if r.info.run_name == names[name]) == ["FAILED", "FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.info.run_id for r in left} == {r.info.run_id for r in runs if r.info.status == "FAILED"}
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    versions = _versions(client, name) + client.search_model_versions(f"name = '{name}-classifier-served'")
    assert len(versions) == 4 and {v.run_id for v in versions} <= finished  # the crashed run's versions are gone
    for v in _versions(client, name):
        assert {"head", "test_accuracy", "data.manifest_sha256"} <= set(v.tags), v.tags
    champion = client.get_model_version_by_alias(f"{name}-classifier", "champion")
    assert champion.run_id in finished


def test_a_server_dying_mid_run_fails_with_the_unreachable_error(tiny_project, tmp_path, server):
    proc, url = server
    client, name = MlflowClient(url), tiny_project.cfg.data.name
    track = _track(tiny_project, tmp_path, url, "track.log")
    # The server is killed once the parent run exists, so the stage loses it halfway through logging.
    assert kill_when(proc, _every(0.2, lambda: bool(_runs(client, name))), timeout=90), "the server exited first"
    assert track.wait(timeout=90) == 2
    output = (tmp_path / "track.log").read_text()
    assert output.splitlines()[-1].startswith(f"error: MLflow tracking server {url} is unreachable ("), output
    assert "Traceback" not in output and not (tmp_path / "mlflow.json").exists()
