"""Model checks: every stage end to end on a tiny synthetic set (tests/conftest.py's tiny_project, run by the
stages' CLIs as dvc.yaml gives them), with the ImageNet MobileNet at 32 px."""

import json

import keras
import numpy as np
import pytest

from pipeline.contracts import ExecutionRecord
from pipeline.files import read_json
from pipeline.layout import SPLITS
from pipeline.model.features import load_features
from pipeline.model.parts import finetune_parts
from pipeline.stages.evaluate import evaluate_folder
from pipeline.stages.extract import extract
from tests.helpers.images import make_dataset, make_image


def test_features_cached_with_provenance(tiny_project):
    d, cfg = tiny_project.layout, tiny_project.cfg
    meta = json.loads((d.features / "meta.json").read_text())
    assert meta["backbone"] == cfg.backbone.model_dump()
    assert meta["classes"] == ["cats", "dogs"] and meta["counts"] == {"train": 24, "validation": 8, "test": 8}
    assert "images_per_second" not in meta  # a fact of the execution, not of the features
    x, y = load_features(d.features, "train")
    assert x.shape == (24, *meta["feature_shape"]) and y.shape == (24,)
    assert np.isfinite(x).all() and x.std() > 0


def test_execution_records_hold_what_each_run_measured(tiny_project):
    d = tiny_project.layout
    extract_run = read_json(d.execution("extract"))
    assert set(extract_run["images_per_second"]) == set(SPLITS) and extract_run["seconds"] > 0
    assert "CPU" in extract_run["devices"] or "GPU" in extract_run["devices"]
    assert read_json(d.execution("download"))["source"] == str(tiny_project.archive)
    for head in ("dense", "finetune"):
        summary = read_json(d.model_dir(head) / "summary.json")
        run = ExecutionRecord.load(d.execution(f"train_{head}"))
        assert run.epochs_run == summary["epochs_run"] and run.seconds and run.seconds > 0
        assert not {"train_seconds", "seconds_per_epoch"} & set(summary)  # timings: the execution record only


def test_features_are_deterministic(tiny_project, tmp_path):
    d, cfg = tiny_project.layout, tiny_project.cfg
    speed = extract(d.manifest, tmp_path / "again", cfg.backbone, cfg.extract)
    assert set(speed) == set(SPLITS) and all(v > 0 for v in speed.values())  # img/s per split
    for split in SPLITS:
        a, b = np.load(d.features / f"{split}.npy"), np.load(tmp_path / "again" / f"{split}.npy")
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
    assert (tmp_path / "again" / "meta.json").read_bytes() == (d.features / "meta.json").read_bytes()


def test_dense_head_has_the_classic_shape_and_learns(tiny_project):
    d, cfg = tiny_project.layout, tiny_project.cfg
    model = keras.models.load_model(d.model_file("dense"))
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [type(layer).__name__ for layer in layers] == ["Flatten", "Dense", "Dropout", "Dense"]
    assert layers[1].units == cfg.dense.units and layers[-1].activation.__name__ == "sigmoid"
    summary = json.loads((d.model_dir("dense") / "summary.json").read_text())
    history = (d.model_dir("dense") / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert 1 <= summary["best_epoch"] <= summary["epochs_run"] == len(history) - 1
    val_losses = [float(line.split(",")[3]) for line in history[1:]]
    assert summary["val_loss"] == pytest.approx(min(val_losses), abs=1e-5)  # best epoch kept


def test_finetune_unfreezes_only_top_blocks_and_keeps_batchnorm_frozen(tiny_project):
    model = keras.models.load_model(tiny_project.layout.model_file("finetune"))
    base = finetune_parts(model).base
    trainable = sorted(layer.name for layer in base.layers if layer.trainable and layer.weights)
    assert trainable == ["conv_dw_13", "conv_pw_13"]
    assert not any(layer.trainable for layer in base.layers if "bn" in layer.name)


def test_evaluate_writes_metrics_and_plots(tiny_project):
    d = tiny_project.layout
    metrics = json.loads(d.metrics.read_text())
    for head in ("dense", "finetune"):
        m = metrics[head]
        assert m["n"] == 8 and sum(map(sum, m["confusion_matrix"])) == 8
        assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(m)
    # Colour classes are trivially separable even with random features: the dense head must learn them.
    assert metrics["dense"]["accuracy"] >= 0.75
    plots = {p.name for p in d.plots.iterdir()}
    assert {
        "confusion_dense.png",
        "confusion_finetune.png",
        "roc.png",
        "curves_dense.png",
        "predictions_dense.csv",
        "roc_finetune.csv",
    } <= plots
    assert d.report.read_text().startswith("<!DOCTYPE html>")


def test_evaluate_on_another_labelled_folder(tiny_project, tmp_path):
    d, cfg = tiny_project.layout, tiny_project.cfg
    other = make_dataset(tmp_path / "other", per_class=5, layout="flat")
    metrics = evaluate_folder(other, d.model_dir("dense"), d.model_dir("finetune"), tmp_path / "r", cfg)
    assert metrics["dense"].n == metrics["finetune"].n == 10
    make_image(other / "zebras" / "z.jpg", 2, 0)
    with pytest.raises(ValueError, match="zebras"):
        evaluate_folder(other, d.model_dir("dense"), d.model_dir("finetune"), tmp_path / "r2", cfg)
