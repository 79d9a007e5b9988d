"""Track stage without a pipeline run: where runs go, DVC tags, champion choice, the params it depends on."""

import hashlib
import json

import pytest
import yaml

from pipeline.config import Config
from pipeline.tracking.lineage import lock_tags
from pipeline.tracking.runs import pick_champion
from pipeline.tracking.store import artifact_location, tracking_uri
from tests.helpers import REPO
from tests.helpers.project import LOCK


def test_default_store_is_sqlite_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking_uri() == f"sqlite:///{REPO / 'mlflow.db'}"  # absolute: every tool finds the same store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # `dvc exp run --temp` points it at the real project
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert artifact_location(tracking_uri()) == (tmp_path / "mlruns").as_uri()  # beside the database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert artifact_location(tracking_uri()) is None  # a server chooses its own


def test_lock_tags_hash_each_stage_entry_except_the_running_one(tmp_path, monkeypatch):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump(LOCK))
    monkeypatch.setenv("DVC_STAGE", "prepare")  # as DVC sets it: this entry is the previous execution's
    entry = json.dumps(LOCK["stages"]["train@dense"], sort_keys=True).encode()
    assert lock_tags(lock) == {"dvc.stage.train_dense.md5": hashlib.md5(entry).hexdigest()}  # `@`: not a tag char
    assert lock_tags(tmp_path / "missing.lock") == {}


@pytest.mark.parametrize(
    "accuracy, current, promoted",
    [
        ({"dense": 0.8, "finetune": 0.9}, None, "finetune"),
        ({"dense": 0.9, "finetune": 0.9}, None, "dense"),  # tie within a run: the cheaper model
        ({"dense": 0.8, "finetune": 0.9}, 0.85, "finetune"),
        ({"dense": 0.8, "finetune": 0.9}, 0.9, None),  # tie with the champion: it stays
        ({"dense": 0.8, "finetune": 0.7}, 0.95, None),
    ],
)
def test_pick_champion(accuracy, current, promoted):
    assert pick_champion(accuracy, current) == promoted


def test_track_stage_depends_on_every_params_section():
    """It logs them all, so a change to any of them must re-run it."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["track"]
    assert stage["params"] == list(Config.model_fields)
