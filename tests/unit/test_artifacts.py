"""What a flow run shows as its Prefect artifact: stage outcomes, test metrics, MLflow links, sweep tables."""

from flows.artifacts import fanout_markdown, mlflow_links, pipeline_markdown, read_json_at, sweep_markdown
from flows.dvc_commands import needed_for
from tests.helpers import REPO

RECORD = {
    "tracking_uri": "http://mlflow:5000/",
    "experiment_id": "3",
    "parent_run_id": "p",
    "child_run_ids": {"dense": "d", "finetune": "f"},
    "registered_model": "cats-classifier",
    "champion": {"version": 2, "head": "finetune", "shipped": "average"},
}


def test_pipeline_markdown_has_outcomes_metrics_and_runs():
    text = pipeline_markdown(
        "cats",
        {
            "extract": {"outcome": "skipped", "seconds": 1.25},
            "train_dense": {"outcome": "ran", "seconds": 30.0},
            "evaluate": {"outcome": "restored", "seconds": None},
        },
        {"dense": {"accuracy": 0.98765, "f1": 0.5}},
        RECORD,
        None,
        {},
        REPO,
    )
    assert "## Pipeline `cats` in the workspace" in text
    assert "| extract | skipped (unchanged) | 1.25 |" in text and "| train_dense | ran | 30 |" in text
    assert "| evaluate | restored from DVC's run-cache |  |" in text  # no time known: blank, not "None"
    assert "| dense | 0.9877 |" in text  # 4 significant digits; absent metrics stay empty
    assert "[p](http://mlflow:5000/#/experiments/3/runs/p)" in text
    assert "`cats-classifier@champion`: version 2 (ships average, chosen on validation)" in text


def test_experiment_runs_name_their_overrides():
    text = pipeline_markdown("cats", {}, None, None, "pipeline-1a2b3c4d", {"dense.units": 8}, REPO)
    assert "DVC experiment `pipeline-1a2b3c4d`" in text and "`dense.units=8`" in text
    assert "dvc exp apply pipeline-1a2b3c4d" in text


def test_a_local_store_says_how_to_open_it_or_that_it_is_another_machines(tmp_path):
    ours = {**RECORD, "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    assert dict(mlflow_links(ours))["dense"] == "`d` (experiment 3)"
    text = pipeline_markdown("cats", {}, None, ours, None, {}, tmp_path)
    assert "`mlflow ui --backend-store-uri sqlite:///mlflow.db` in the project" in text
    assert "http://127.0.0.1:5000/#/experiments/3" in text and str(tmp_path) not in text
    theirs = pipeline_markdown(
        "cats", {}, None, {**RECORD, "tracking_uri": "sqlite:////home/ci/w/mlflow.db"}, None, {}, tmp_path
    )
    assert "Logged to `sqlite:////home/ci/w/mlflow.db`, not this project's store" in theirs
    assert "mlflow ui" not in theirs


def test_sweep_table_marks_the_best_validation_loss():
    rows = [
        {
            "overrides": {"dense.units": u},
            "experiment": f"sweep-{u}",
            "extract": "skipped",
            "summary": {"best_epoch": 1, "epochs_run": 2, "val_loss": loss, "val_accuracy": 0.9},
        }
        for u, loss in ((8, 0.3), (16, 0.2))
    ]
    text = sweep_markdown("cats", rows)
    assert "| **16** | **1** | **2** | **0.2** |" in text and "| 8 | 1 | 2 | 0.3 |" in text
    assert "Best by validation loss: `sweep-16`" in text


def test_fanout_table_names_each_trials_dvc_experiment():
    rows = [
        {
            "setting": "sweep-1a2b3c4d-2",
            "experiment": "sweep-1a2b3c4d-2",
            "overrides": {"dense.units": 16},
            "metrics": {"val_loss": 0.2, "seconds.train_dense": 9.0},
            "tags": {"stage.extract": "pulled", "checkout": "host:/tmp/a"},
        },
        {"setting": "sweep-1a2b3c4d-1", "experiment": None, "overrides": {"dense.units": 8}},  # the trial failed
    ]
    text = fanout_markdown("cats", rows, {"tracking_uri": "http://mlflow:5000", "experiment_id": "3", "run_id": "p"})
    assert "| 1 | `sweep-1a2b3c4d-2` | 16 |" in text
    assert "| `sweep-1a2b3c4d-2` | pulled from the DVC remote | 9 | host:/tmp/a |" in text
    assert "| none |  |  | no MLflow run (trial failed) |" in text
    assert "`dvc exp list origin`" in text


def test_json_of_the_workspace(tmp_path):
    (tmp_path / "m.json").write_text('{"a": 1}')
    assert read_json_at(tmp_path, "m.json") == {"a": 1}
    assert read_json_at(tmp_path, "missing.json") is None


def test_a_head_needs_the_stages_up_to_the_features_and_reads_only_extracts_outputs():
    name = "cats_and_dogs_filtered"
    order, reads = needed_for(REPO, f"train_dense@{name}")
    assert order == ["source", *(f"{s}@{name}" for s in ("download", "prepare", "extract", "train_dense"))]
    assert reads == {f"extract@{name}"}
