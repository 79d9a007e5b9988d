"""Track stage without a server: the tiny pipeline's outputs logged to a sqlite store beside its database."""

import pytest
from mlflow import MlflowClient

from pipeline.contracts import TrackRecord
from pipeline.stages.track import track

pytestmark = pytest.mark.usefixtures("forget_tracking_uri")


def test_without_a_server_runs_go_to_a_sqlite_store(tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    record = track(tiny_project.cfg, tiny_project.layout, tiny_project.lock, tmp_path / "mlflow.json")
    client = MlflowClient(record.tracking_uri)
    assert client.get_run(record.parent_run_id).info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())
    assert (tmp_path / "mlruns").is_dir() and record.champion is not None and record.champion.changed
    assert set(record.child_run_ids) == {"dense", "finetune"}
    assert TrackRecord.load(tmp_path / "mlflow.json") == record
