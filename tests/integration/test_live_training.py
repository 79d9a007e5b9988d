"""Live progress: with an MLflow server configured, the dense head's training stage logs each epoch to a run of
its own, which the track stage then adopts as the head's child (a stage that crashes ends it FAILED). A server
that is down or hung changes nothing about training: it succeeds and writes the same bytes as without any server."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config import parse_config
from pipeline.contracts import ExecutionRecord
from pipeline.layout import DatasetLayout
from pipeline.stages.track import track
from pipeline.tracking.lineage import EXECUTION_TAG, run_name
from pipeline.tracking.live import FAILED, STATE_TAG
from tests.helpers.params import renamed, write_params
from tests.helpers.pipeline import run_stage, stage_command
from tests.helpers.processes import env
from tests.helpers.servers import free_port, silent_listener

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("forget_tracking_uri")]
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _project(tiny_project, dest: Path, name: str) -> tuple[DatasetLayout, Path, dict]:
    """A copy of the tiny project whose dataset (and so MLflow experiment) is called `name`."""
    root = shutil.copytree(tiny_project.root, dest, symlinks=True)
    (root / "data" / tiny_project.cfg.data.name).rename(root / "data" / name)
    params = renamed(tiny_project.params, name)
    write_params(root / "params.yaml", params)
    return DatasetLayout.of(name, root), root, params


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(run_id, key))


def test_epochs_show_up_while_training_and_track_adopts_the_run(tiny_project, mlflow_server, tmp_path, monkeypatch):
    layout, root, params = _project(tiny_project, tmp_path / "project", "live_tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(root)  # as DVC runs the stage: in the project, whose commit names the run
    run_stage("train_dense", layout, root / "params.yaml")

    client = MlflowClient(mlflow_server)
    record = ExecutionRecord.load(layout.execution("train_dense"))
    live = client.get_run(record.mlflow_live_run_id)  # logged by the training stage, before any track
    assert live.info.run_name == run_name({"mlflow.source.git.commit": tiny_project.commit}, "dense")
    assert live.info.status == "FINISHED" and live.data.tags[STATE_TAG] == "trained"
    assert "mlflow.parentRunId" not in live.data.tags  # not a child until track adopts it
    history = [line.split(",") for line in (layout.model_dir("dense") / "history.csv").read_text().split()[1:]]
    for i, key in enumerate(KEYS, start=1):
        assert _history(client, live.info.run_id, key) == [(int(row[0]), float(row[i])) for row in history]

    first = track(parse_config(params), layout, root / "dvc.lock", tmp_path / "first.json")
    assert first.child_run_ids["dense"] == live.info.run_id
    adopted = client.get_run(live.info.run_id)
    assert adopted.data.tags["mlflow.parentRunId"] == first.parent_run_id
    assert adopted.data.tags[STATE_TAG] == "adopted" and EXECUTION_TAG in adopted.data.tags
    assert adopted.data.params["head"] == "dense" and "test_accuracy" in adopted.data.metrics
    assert adopted.info.end_time == record.ended_ms  # the stage's end, not the track's
    for i, key in enumerate(KEYS, start=1):  # one point per epoch: track did not log the live ones again
        assert _history(client, live.info.run_id, key) == [(int(row[0]), float(row[i])) for row in history]

    # A track rerun without retraining (the same execution) reuses the first's runs: the child stays its parent's.
    second = track(parse_config(params), layout, root / "dvc.lock", tmp_path / "second.json")
    assert (second.parent_run_id, second.child_run_ids) == (first.parent_run_id, first.child_run_ids)
    assert client.get_run(live.info.run_id).data.tags["mlflow.parentRunId"] == first.parent_run_id


def test_a_training_stage_that_crashes_ends_its_live_run_failed(tiny_project, mlflow_server, tmp_path, monkeypatch):
    layout, root, _ = _project(tiny_project, tmp_path / "project", "live_crash")
    (layout.features / "validation.npy").write_bytes(b"not an array")  # training raises once it reads validation
    layout.execution("train_dense").unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(root)
    with pytest.raises(ValueError):  # numpy: not a .npy file
        run_stage("train_dense", layout, root / "params.yaml")
    assert not layout.execution("train_dense").exists()  # no record, so no track ever adopts the run

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("live_crash").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags[STATE_TAG] == FAILED  # not RUNNING for ever
    assert run.info.end_time is not None


def _train_in_a_process(layout: DatasetLayout, root: Path, uri: str | None) -> str:
    """The dense head's stage as DVC runs it (a fresh process in the project; retrained from the features), with
    MLFLOW_TRACKING_URI = `uri`; its output."""
    shutil.rmtree(layout.model_dir("dense"))
    layout.execution("train_dense").unlink()
    module, args = stage_command("train_dense", layout)
    environ = env()
    environ.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", module, "--params", str(root / "params.yaml"), *args],
        cwd=root,
        env={**environ, **({"MLFLOW_TRACKING_URI": uri} if uri else {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def without_server(tiny_project, tmp_path_factory) -> DatasetLayout:
    """The dense head trained with no MLFLOW_TRACKING_URI at all."""
    layout, root, _ = _project(tiny_project, tmp_path_factory.mktemp("no_server") / "project", "dead_tiny")
    _train_in_a_process(layout, root, None)
    return layout


@pytest.mark.parametrize("server", ["closed port", "hung"])
def test_a_dead_server_does_not_change_training(tiny_project, without_server, tmp_path, server):
    layout, root, _ = _project(tiny_project, tmp_path / "project", "dead_tiny")
    listener = silent_listener() if server == "hung" else None
    port = listener.getsockname()[1] if listener else free_port()
    try:
        output = _train_in_a_process(layout, root, f"http://127.0.0.1:{port}")
    finally:
        if listener:
            listener.close()
    for name in ("model.keras", "history.csv", "summary.json"):  # the same bytes as without any server
        assert (layout.model_dir("dense") / name).read_bytes() == (
            without_server.model_dir("dense") / name
        ).read_bytes()
    record = ExecutionRecord.load(layout.execution("train_dense"))
    assert record.mlflow_live_run_id is None and record.epochs_run is not None and record.epochs_run >= 1
    assert output.count("live MLflow logging") == 1, output  # one warning, then it stopped trying
