"""What the track stage reads from execution records (times, timings) and how it names and tags runs."""

import math

import pytest

from pipeline.cli import execution_record
from pipeline.contracts import ExecutionRecord
from pipeline.files import read_json, write_json
from pipeline.layout import DatasetLayout
from pipeline.tracking.lineage import execution_id, execution_tags, run_name
from pipeline.tracking.owner import ORPHANED, STATE_TAG, TRAINED, TRAINING, claim
from pipeline.tracking.records import adoptable_live_run, execution_span, stage_span, timing_metrics, training_record
from tests.helpers.project import git


def test_an_execution_record_keeps_its_wall_clock_span(tmp_path):
    path = tmp_path / "train_dense.json"
    with execution_record(path) as facts:
        facts["epochs_run"] = 3
    record = read_json(path)
    assert record["epochs_run"] == 3 and record["seconds"] >= 0
    assert record["started_ms"] <= record["ended_ms"]
    assert stage_span(ExecutionRecord.load(path)) == (record["started_ms"], record["ended_ms"])


def test_the_execution_spans_its_stages_records(tmp_path):
    layout = DatasetLayout(tmp_path)
    write_json(layout.execution("download"), {"seconds": 1.0, "started_ms": 1000, "ended_ms": 2000})
    write_json(layout.execution("train_dense"), {"seconds": 5.0, "started_ms": 3000, "ended_ms": 8000})
    write_json(layout.execution("extract"), {"seconds": 2.0})  # a record from before the times were kept
    assert execution_span(layout) == (1000, 8000)
    assert execution_span(DatasetLayout(tmp_path / "none")) == (None, None)  # every stage came from DVC's cache
    assert stage_span(training_record(layout, "dense")) == (3000, 8000)
    assert stage_span(training_record(layout, "finetune")) == (None, None)  # no record: an empty one


@pytest.mark.parametrize(
    "facts, metrics",
    [
        ({"seconds": 12.0, "epochs_run": 4}, {"train_seconds": 12.0, "seconds_per_epoch": 3.0}),
        ({"seconds": 12.0, "epochs_run": 0}, {"train_seconds": 12.0}),  # no epoch: no per-epoch time, not NaN
        ({"seconds": 12.0}, {"train_seconds": 12.0}),
        ({"seconds": float("nan"), "epochs_run": 4}, {}),
        (None, {}),  # no record: the stage came from DVC's cache
    ],
)
def test_timing_metrics_are_finite_or_absent(tmp_path, facts, metrics):
    record_file = tmp_path / "train_dense.json"
    if facts is not None:
        write_json(record_file, facts)
    got = timing_metrics(ExecutionRecord.load_if_any(record_file))
    assert got == metrics and all(math.isfinite(v) for v in got.values())


def test_runs_are_named_after_the_dvc_experiment_else_the_commit(tmp_path, monkeypatch):
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT", "PREFECT__FLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages: {}\n")
    assert run_name(execution_tags(lock)) == "workspace"  # outside git
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "dvc.lock")
    git(tmp_path, "commit", "-qm", "x")
    commit = git(tmp_path, "rev-parse", "HEAD")
    tags = execution_tags(lock)
    assert (run_name(tags), run_name(tags, "dense")) == (commit[:7], f"dense {commit[:7]}")
    assert tags["mlflow.source.name"] == str(tmp_path.resolve())  # no remote: the project folder, which exists
    git(tmp_path, "remote", "add", "origin", "https://example.com/team/project.git")
    assert execution_tags(lock)["mlflow.source.name"] == "https://example.com/team/project.git"

    monkeypatch.setenv("DVC_EXP_NAME", "dusty-mast")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", commit)
    exp_tags = execution_tags(lock)
    assert run_name(exp_tags) == "dusty-mast"  # not "cats dusty-mast": the experiment is cats
    assert exp_tags["dvc.exp.name"] == "dusty-mast" and exp_tags["dvc.exp.baseline_rev"] == commit
    # The same execution rerun as another experiment (after a crash) finds the runs the crash left.
    assert execution_id(exp_tags, {"a": 1}) == execution_id(tags, {"a": 1}) != execution_id(tags, {"a": 2})


@pytest.mark.usefixtures("forget_tracking_uri")
def test_a_live_run_that_cannot_be_adopted_is_marked_orphaned(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    other, this = (mlflow.create_experiment(n, (tmp_path / "mlruns").as_uri()) for n in ("old_name", "new_name"))
    client = mlflow.MlflowClient()
    live = client.create_run(other, tags={STATE_TAG: TRAINING}).info.run_id
    record = ExecutionRecord(seconds=1.0, mlflow_live_run_id=live)
    assert adoptable_live_run(record, this, claim()) is None  # logged under another experiment (data.name changed)
    assert client.get_run(live).data.tags[STATE_TAG] == ORPHANED  # so it is never taken for a child
    record = ExecutionRecord(seconds=1.0, mlflow_live_run_id="0" * 32)
    assert adoptable_live_run(record, this, claim()) is None  # not in this store: track logs a new child instead
    trained = client.create_run(this, tags={STATE_TAG: TRAINED}).info.run_id
    assert adoptable_live_run(ExecutionRecord(seconds=1.0, mlflow_live_run_id=trained), this, claim()) is not None
