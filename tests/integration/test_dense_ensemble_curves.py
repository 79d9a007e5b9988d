"""A dense ensemble's curves are those of the model it saves: history.csv (what the report's curves and
`dvc plots show` draw) and the val_loss that MLflow shows, live and in Compare, end at summary.json's val_loss
and best epoch; each member's own epochs are logged apart, labelled member_<k>/."""

import csv
import shutil

import keras
import pytest
from mlflow import MlflowClient

from pipeline.files import read_json
from pipeline.layout import DatasetLayout
from pipeline.model.features import load_features
from pipeline.model.training import HISTORY_KEYS
from pipeline.tracking.live import RUN_ID_KEY
from tests.helpers.params import deep_merge, renamed, write_params
from tests.helpers.pipeline import run_stage

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("forget_tracking_uri")]
MEMBERS = 2


def test_ensemble_history_and_logged_val_loss_are_the_saved_models(tiny_project, mlflow_server, tmp_path, monkeypatch):
    root = shutil.copytree(tiny_project.root, tmp_path / "project", symlinks=True)
    (root / "data" / tiny_project.cfg.data.name).rename(root / "data" / "ensemble_tiny")
    params = deep_merge(renamed(tiny_project.params, "ensemble_tiny"), {"dense": {"ensemble": MEMBERS}})
    write_params(root / "params.yaml", params)
    layout = DatasetLayout.of("ensemble_tiny", root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(root)
    run_stage("train_dense", layout, root / "params.yaml")

    summary = read_json(layout.model_dir("dense") / "summary.json")
    with (layout.model_dir("dense") / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary["members"] == MEMBERS
    assert len(rows) == summary["epochs_run"] == max(summary["member_epochs_run"])
    saved = rows[summary["best_epoch"] - 1]
    assert (float(saved["val_loss"]), float(saved["val_accuracy"])) == (summary["val_loss"], summary["val_accuracy"])
    head = keras.models.load_model(layout.model_file("dense"))  # the saved model, scored again
    x, y = load_features(layout.features, "validation")
    probs = head.predict(x, verbose=0)
    loss = keras.losses.BinaryCrossentropy()  # the tiny project's two classes: one sigmoid output
    assert float(loss(y[:, None], probs)) == pytest.approx(summary["val_loss"], abs=1e-5)

    client = MlflowClient(mlflow_server)
    run = client.get_run(read_json(layout.execution("train_dense"))[RUN_ID_KEY])
    for key in HISTORY_KEYS:  # the ensemble's, under the plain names
        logged = sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(run.info.run_id, key))
        assert logged == [(int(r["epoch"]), float(r[key])) for r in rows]
    assert run.data.metrics["val_loss"] == pytest.approx(summary["val_loss"], abs=1e-6)  # what Compare shows
    for k, epochs in enumerate(summary["member_epochs_run"], start=1):
        assert len(client.get_metric_history(run.info.run_id, f"member_{k}/val_loss")) == epochs
