"""A copied project (`cp -r`, mlflow.db and mlruns/ included) logs into its own mlruns/, never the original's."""

import shutil
from pathlib import Path

import mlflow
import pytest

from pipeline.tracking.store import open_experiment

pytestmark = pytest.mark.usefixtures("forget_tracking_uri")


def _log_run(project: Path, monkeypatch) -> mlflow.entities.Run:
    """A run with one artifact in `project`'s default store, as the track stage opens it (DVC_ROOT = project), in
    a process of its own (open_experiment sets MLFLOW_TRACKING_URI)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(project))
    _, experiment = open_experiment("cats")
    note = project / "note.txt"
    note.write_text(str(project))
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_artifact(str(note))
    return mlflow.get_run(run.info.run_id)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_copied_project_logs_into_its_own_mlruns(tmp_path, monkeypatch, caplog):
    original = tmp_path / "original"
    original.mkdir()
    first = _log_run(original, monkeypatch)
    assert first.info.artifact_uri.startswith((original / "mlruns").as_uri() + "/")
    copy = Path(shutil.copytree(original, tmp_path / "copy"))
    before = _files(original)

    second = _log_run(copy, monkeypatch)
    assert second.info.artifact_uri.startswith((copy / "mlruns").as_uri() + "/")
    assert (copy / "mlruns" / second.info.run_id / "artifacts" / "note.txt").read_text() == str(copy)
    assert _files(original) == before  # nothing written into the original project, its store included
    assert "a copied project" in caplog.text
    assert mlflow.get_experiment(second.info.experiment_id).artifact_location == (copy / "mlruns").as_uri()

    caplog.clear()
    third = _log_run(original, monkeypatch)  # the original is unaffected and nothing is repointed there
    assert third.info.artifact_uri.startswith((original / "mlruns").as_uri() + "/") and not caplog.text


def test_a_chosen_sqlite_store_keeps_its_artifact_location(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI set by the user: their experiment's location is theirs to choose."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("cats", artifact_location=(tmp_path / "elsewhere").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _, experiment = open_experiment("cats")
    assert experiment.artifact_location == (tmp_path / "elsewhere").as_uri()
