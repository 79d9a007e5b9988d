"""What a flow run shows as its Prefect artifact: stage outcomes, test metrics, MLflow links, sweep tables."""

from flows.artifacts import mlflow_links, pipeline_markdown, read_json_at, sweep_markdown

RECORD = {
    "tracking_uri": "http://mlflow:5000/",
    "experiment_id": "3",
    "parent_run_id": "p",
    "child_run_ids": {"dense": "d", "finetune": "f"},
    "registered_model": "cats-classifier",
    "champion": {"version": 2, "head": "finetune"},
}


def test_pipeline_markdown_has_outcomes_metrics_and_runs():
    text = pipeline_markdown(
        "cats",
        {"extract": "skipped", "train_dense": "ran", "evaluate": "restored"},
        {"dense": {"accuracy": 0.98765, "f1": 0.5}},
        RECORD,
        None,
        {},
    )
    assert "## Pipeline `cats` in the workspace" in text
    assert "| extract | skipped (unchanged) |" in text and "| evaluate | restored from DVC's run-cache |" in text
    assert "| dense | 0.9877 |" in text  # 4 significant digits; absent metrics stay empty
    assert "[p](http://mlflow:5000/#/experiments/3/runs/p)" in text
    assert "`cats-classifier@champion`: version 2 (finetune head)" in text


def test_experiment_runs_name_their_overrides():
    text = pipeline_markdown("cats", {}, None, None, "pipeline-1a2b3c4d", {"dense.units": 8})
    assert "DVC experiment `pipeline-1a2b3c4d`" in text and "`dense.units=8`" in text
    assert "dvc exp apply pipeline-1a2b3c4d" in text


def test_links_to_a_local_store_are_plain_ids():
    links = dict(mlflow_links({**RECORD, "tracking_uri": "sqlite:///x/mlflow.db"}))
    assert links == {
        "pipeline (parent)": "`p` (experiment 3 in `sqlite:///x/mlflow.db`)",
        "dense": "`d` (experiment 3 in `sqlite:///x/mlflow.db`)",
        "finetune": "`f` (experiment 3 in `sqlite:///x/mlflow.db`)",
    }


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


def test_json_of_the_workspace(tmp_path):
    (tmp_path / "m.json").write_text('{"a": 1}')
    assert read_json_at(tmp_path, "m.json") == {"a": 1}
    assert read_json_at(tmp_path, "missing.json") is None
