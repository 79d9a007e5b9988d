"""The head options on tiny data: pooled and ensembled dense heads through evaluate and predict, the fine-tune's
flip cache, the starting weights kept when fine-tuning only hurts, and the learning-rate range test's CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.layout import DatasetLayout
from pipeline.lr_find import main as lr_find_main
from pipeline.model.heads import head_logits
from pipeline.model.inference import load_for_inference
from pipeline.model.parts import averaged
from pipeline.predict import from_model_dir, predict
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_config, tiny_params, write_params
from tests.helpers.pipeline import run_stages

RECIPE = {  # the shape of a pooled recipe, small
    "dense": {
        "pooling": "avg_max",
        "units": 0,
        "ensemble": 2,
        "optimizer": "adamw",
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "label_smoothing": 0.1,
        "learning_rate": 0.01,
    },
    "finetune": {
        "augment": {"flip": True, "rotation": 0.0, "zoom": 0.0, "color": 0.0},
        "optimizer": "adamw",
        "schedule": "cosine",
        "warmup_epochs": 1,
        "epochs": 3,
        "learning_rate": 1e-4,
    },
}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """A 3-class tiny project run from download to evaluate with RECIPE (softmax + label smoothing: one-hot)."""
    root = tmp_path_factory.mktemp("recipes")
    archive = zip_dir(make_dataset(root / "src" / "three", n_classes=3), root / "three.zip")
    params = tiny_params(RECIPE, {"data": {"name": "three", "url": str(archive)}})
    layout = DatasetLayout.of("three", root)
    run_stages(layout, write_params(root / "params.yaml", params), first="download")
    return root, layout, params


def test_ensemble_of_pooled_heads_is_one_model(pooled):
    _, layout, _ = pooled
    summary = json.loads((layout.model_dir("dense") / "summary.json").read_text())
    assert summary["members"] == 2 and len(summary["member_best_epochs"]) == 2
    head = load_for_inference(layout.model_file("dense"))
    members = averaged(head)  # found by structure: the models a final Average layer takes
    assert len(members) == 2
    x = np.random.default_rng(0).random((4, *head.inputs[0].shape[1:])).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(head.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert head_logits(head).predict(x, verbose=0).shape == (4, 3)  # Grad-CAM's scores: one per class


def test_pooled_recipe_is_evaluated_and_predicted(pooled):
    root, layout, params = pooled
    metrics = json.loads(layout.metrics.read_text())
    assert set(metrics) == {"dense", "finetune"} and metrics["dense"]["n"] > 0
    assert (layout.plots / "gradcam_finetune.png").stat().st_size > 0  # Grad-CAM through the ensemble head
    images = sorted((root / "src" / "three" / "validation" / "birds").glob("*.jpg"))[:2]
    for head in ("dense", "finetune"):
        predictor = from_model_dir(layout.model_dir(head), tiny_config(params))
        out = predict([str(p) for p in images], predictor)
        assert [p.error for p in out] == [None, None] and all(p.label in predictor.classes for p in out)


def test_finetune_keeps_the_start_when_every_epoch_is_worse(tmp_path):
    """A learning rate of 1 wrecks the conv blocks in one step: the shipped model must be its start, the dense
    head's."""
    archive = zip_dir(make_dataset(tmp_path / "src" / "two"), tmp_path / "two.zip")
    params = tiny_params(
        {"data": {"name": "two", "url": str(archive)}},
        {
            "finetune": {
                "learning_rate": 1.0,
                "optimizer": "rmsprop",
                "schedule": "constant",
                "epochs": 2,
                "augment": {"flip": True, "rotation": 0.0, "zoom": 0.0, "color": 0.0},
            }
        },
    )
    layout = DatasetLayout.of("two", tmp_path)
    run_stages(layout, write_params(tmp_path / "params.yaml", params), first="download", last="train_finetune")
    summary = json.loads((layout.model_dir("finetune") / "summary.json").read_text())
    history = (layout.model_dir("finetune") / "history.csv").read_text().splitlines()[1:]
    val_losses = [float(line.split(",")[3]) for line in history]
    assert summary["shipped"] == "dense" and summary["val_loss"] < min(val_losses)
    dense = json.loads((layout.model_dir("dense") / "summary.json").read_text())
    assert summary["val_accuracy"] == pytest.approx(dense["val_accuracy"], abs=1e-6)


def test_lr_find_writes_curve_plot_and_suggestion(pooled, monkeypatch):
    root, layout, _ = pooled
    monkeypatch.chdir(root)
    for head in ("dense", "finetune"):
        lr_find_main(["--head", head, "--steps", "30"])
        stem = DatasetLayout.of("three").lr_find(head)
        rows = stem.with_suffix(".csv").read_text().splitlines()
        assert rows[0] == "learning_rate,loss,smoothed_loss" and len(rows) > 5
        rates = [float(r.split(",")[0]) for r in rows[1:]]
        assert rates == sorted(rates) and rates[0] == pytest.approx(1e-7)
        suggestion = json.loads(stem.with_suffix(".json").read_text())["suggestion"]
        assert rates[0] / 10 <= suggestion <= rates[-1] / 10
        assert stem.with_suffix(".png").stat().st_size > 0
