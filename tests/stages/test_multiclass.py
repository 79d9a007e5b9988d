"""Three classes end to end, one of them short of images: prepare reports the imbalance, both heads train with
balanced class weights and a softmax output, evaluate reports per-class metrics, predict and the served model
answer with the three class names."""

import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.files import read_json
from pipeline.layout import DatasetLayout
from pipeline.predict import from_model_dir, predict
from pipeline.tracking.served import log_pyfunc_model
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_config, tiny_params, write_params
from tests.helpers.pipeline import run_stage, run_stages

CLASSES = ["birds", "cats", "dogs"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three")
    d = DatasetLayout.of("three", tmp)
    raw = make_dataset(d.raw, n_classes=3, per_class=15, layout="flat")
    for f in sorted((raw / "birds").glob("*.jpg"))[:6]:
        f.unlink()  # 9 birds against 15 cats and 15 dogs
    balanced = {"class_weight": "balanced"}
    params = tiny_params({"data": {"name": "three", "url": "unused"}, "dense": balanced, "finetune": balanced})
    write_params(tmp / "params.yaml", params)
    handler = _Records()
    logging.getLogger("pipeline").addHandler(handler)
    try:
        run_stage("prepare", d, tmp / "params.yaml")
    finally:
        logging.getLogger("pipeline").removeHandler(handler)
    run_stages(d, tmp / "params.yaml")
    return d, tiny_config(params), handler.messages


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_prepare_reports_the_imbalance(run):
    d, _, warnings = run
    summary = read_json(d.prepare_summary)
    assert summary["classes"] == CLASSES
    assert summary["per_class"]["birds"]["train"] == 5 and summary["per_class"]["cats"]["train"] == 9
    assert summary["imbalance_ratio"] == 1.8
    assert any("imbalanced" in m and "class_weight" in m for m in warnings)


def test_both_heads_have_a_softmax_output_and_balanced_weights(run):
    d, _, _ = run
    for head in ("dense", "finetune"):
        out = keras.models.load_model(d.model_file(head)).outputs[0]
        assert out.shape[-1] == 3
        summary = read_json(d.model_dir(head) / "summary.json")
        assert summary["classes"] == CLASSES
        weights = summary["class_weight"]
        assert weights["birds"] == pytest.approx(23 / (3 * 5)) and weights["cats"] == pytest.approx(23 / 27)
    dense = keras.models.load_model(d.model_file("dense"))
    assert dense.layers[-1].activation.__name__ == "softmax"


def test_evaluate_reports_per_class_and_macro_metrics(run):
    d, _, _ = run
    metrics = read_json(d.metrics)
    for m in metrics.values():
        assert list(m["per_class"]) == CLASSES and np.array(m["confusion_matrix"]).shape == (3, 3)
        assert {"macro_f1", "roc_auc", "precision", "recall"} <= set(m)
        assert sum(c["support"] for c in m["per_class"].values()) == m["n"] == 8
    plots = {p.name for p in d.plots.iterdir()}
    assert {"gradcam_finetune.png", "misclassified_dense.png", "misclassified_finetune.png"} <= plots
    assert "roc.png" not in plots  # binary only
    html = d.report.read_text()
    assert all(c in html for c in CLASSES) and "Imbalanced" in html


def test_predict_and_served_model_answer_with_the_class_names(run, tmp_path):
    d, cfg, _ = run
    files = [str(p) for p in sorted(d.raw.glob("*/*.jpg"))[::10]]
    got = predict(files, from_model_dir(d.model_dir("finetune"), cfg))
    assert all(p.label in CLASSES and list(p.probabilities) == CLASSES for p in got)
    assert all(
        abs(sum(p.probabilities.values()) - 1) < 1e-5 and p.probability == max(p.probabilities.values()) for p in got
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("three", (tmp_path / "mlruns").as_uri()))
        with mlflow.start_run():
            info = log_pyfunc_model(d.model_dir("finetune"), cfg.evaluate.tta_flip, Path(files[0]))
        served = mlflow.pyfunc.load_model(info.model_uri)
        answer = served.predict(pd.DataFrame({"image": [Path(f).read_bytes() for f in files]}))
    finally:
        mlflow.set_tracking_uri(None)
    assert list(answer["class"]) == [p.label for p in got]
    for row, p in zip(answer["probabilities"], got):
        assert row == pytest.approx(p.probabilities, abs=1e-5)
