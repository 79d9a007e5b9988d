"""The contracts between stages: a file that is not what its writer writes fails where it is read, naming the
file; what a stage writes loads and saves back to the same bytes."""

import json

import keras
import pytest

from pipeline.cli import execution_record
from pipeline.contracts import ContractError, ExecutionRecord, PrepareSummary, TrainingSummary
from pipeline.model.training import summarize
from pipeline.stages.prepare import prepare
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_config


def _summary(tmp_path):
    history = keras.callbacks.History()
    history.history = {"loss": [0.9, 0.5], "accuracy": [0.5, 0.7], "val_loss": [0.6, 0.4], "val_accuracy": [0.6, 0.8]}
    path = tmp_path / "summary.json"
    summarize(history, ["cats", "dogs"], {0: 1.5, 1: 0.75}).save(path)
    return path


def test_an_unknown_or_missing_key_is_refused_naming_the_file(tmp_path):
    path = _summary(tmp_path)
    written = json.loads(path.read_text())
    for broken in ({**written, "val_los": 0.4}, {k: v for k, v in written.items() if k != "classes"}):
        path.write_text(json.dumps(broken))
        with pytest.raises(ContractError, match=f"{path} is not a TrainingSummary file") as err:
            TrainingSummary.load(path)
        assert "val_los" in str(err.value) or "classes" in str(err.value)


def test_a_misspelt_fact_of_an_execution_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="epoch_run"), execution_record(tmp_path / "e.json") as facts:
        facts["epoch_run"] = 3
    assert not (tmp_path / "e.json").exists()
    with execution_record(tmp_path / "e.json") as facts:
        facts["epochs_run"] = 3
    assert ExecutionRecord.load(tmp_path / "e.json").epochs_run == 3


def test_what_a_stage_writes_saves_back_to_the_same_bytes(tmp_path):
    raw = make_dataset(tmp_path / "raw", per_class=12)
    prepare(raw, tmp_path / "prepared", tmp_path / "prepare.json", tiny_config().split, processes=1)
    written = [tmp_path / "prepare.json", _summary(tmp_path)]
    with execution_record(tmp_path / "execution.json") as facts:
        facts["images_per_second"] = {"train": 12.5}
    for path, contract in zip(
        [*written, tmp_path / "execution.json"], (PrepareSummary, TrainingSummary, ExecutionRecord)
    ):
        contract.load(path).save(tmp_path / "again.json")
        assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
