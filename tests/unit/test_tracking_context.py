"""Track stage without a pipeline run: where runs go, DVC tags, champion rule, the params it depends on."""

import hashlib
import json

import pytest
import yaml

from pipeline.config import SOURCE_KEYS, Config, DataConfig
from pipeline.tracking.lineage import lock_tags
from pipeline.tracking.registry import DATA_TAG, VAL_LOSS_TAG, beats
from pipeline.tracking.store import artifact_location, tracking_uri
from tests.helpers import REPO
from tests.helpers.project import lock_of


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
    lock.write_text(yaml.safe_dump(lock_of("cats")))
    monkeypatch.setenv("DVC_STAGE", "prepare@cats")  # as DVC sets it: this entry is the previous execution's
    entry = json.dumps(lock_of("cats")["stages"]["train_dense@cats"], sort_keys=True).encode()
    # One dataset's stages, named without the dataset: another dataset's and `source` are not its own.
    assert lock_tags(lock, "cats") == {"dvc.stage.train_dense.md5": hashlib.md5(entry).hexdigest()}
    assert set(lock_tags(lock, "other")) == {"dvc.stage.train_dense.md5"}
    assert set(lock_tags(lock)) == {"dvc.stage.source.md5"}
    assert lock_tags(tmp_path / "missing.lock", "cats") == {}


def _tags(val_loss: str, data: str = "a") -> dict[str, str]:
    return {VAL_LOSS_TAG: val_loss, DATA_TAG: data}


@pytest.mark.parametrize(
    "new, held, moves",
    [
        (_tags("0.2"), None, True),  # no champion yet
        (_tags("0.2"), _tags("0.3"), True),
        (_tags("0.3"), _tags("0.3"), False),  # a tie keeps the champion: no churn
        (_tags("0.4"), _tags("0.3"), False),
        (_tags("0.4"), _tags("0.3", "other split"), True),  # losses on other data don't compare: the new one
    ],
)
def test_the_champion_moves_on_a_lower_validation_loss_of_the_same_split(new, held, moves):
    assert beats(new, held) == moves


def test_track_stage_depends_on_every_params_section():
    """It logs them all, so a change to any of them must re-run it: its dataset's own entry and every shared
    key but which dataset is the default (data.name)."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["track"]["do"]
    shared = [f"data.{key}" for key in DataConfig.model_fields if key not in ("name", *SOURCE_KEYS)]
    assert stage["params"] == ["datasets.${item}", *shared, *list(Config.model_fields)[1:]]
