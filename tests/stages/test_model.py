"""Model checks: every stage function end to end on a tiny synthetic set with a random-weight MobileNet."""
import json

import keras
import numpy as np
import pytest

from pipeline.backbone import BASE_NAME
from pipeline.config import parse_config
from pipeline.download import download
from pipeline.evaluate import evaluate_folder
from pipeline.extract import extract, load_features
from pipeline.prepare import prepare
from tests.conftest import make_dataset, run_stages


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """Run every stage once on 2 classes x 20 images; later tests inspect the outputs."""
    from tests.conftest import TINY_PARAMS, zip_dir

    tmp = tmp_path_factory.mktemp("tiny")
    archive = zip_dir(make_dataset(tmp / "src" / "synthetic"), tmp / "synthetic.zip")
    cfg = parse_config({**TINY_PARAMS, "data": {"name": "synthetic", "url": str(archive)}})
    d = tmp / "data"
    download(cfg.data, d / "raw", d / "download.json")
    prepare(d / "raw", d / "prepared", d / "prepare.json", cfg.split, workers=1)
    run_stages(d, cfg)
    return d, cfg


def test_features_cached_with_provenance(trained):
    d, cfg = trained
    meta = json.loads((d / "features" / "meta.json").read_text())
    assert meta["backbone"] == cfg.backbone.model_dump()
    assert meta["classes"] == ["cats", "dogs"] and meta["counts"] == {"train": 24, "validation": 8, "test": 8}
    x, y = load_features(d / "features", "train")
    assert x.shape == (24, *meta["feature_shape"]) and y.shape == (24,)
    assert np.isfinite(x).all() and x.std() > 0


def test_features_are_deterministic(trained, tmp_path):
    d, cfg = trained
    extract(d / "prepared" / "manifest.csv", tmp_path / "again", cfg.backbone, cfg.extract)
    for split in ("train", "validation", "test"):
        a, b = np.load(d / "features" / f"{split}.npy"), np.load(tmp_path / "again" / f"{split}.npy")
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)


def test_dense_head_has_the_classic_shape_and_learns(trained):
    d, cfg = trained
    model = keras.models.load_model(d / "models" / "dense" / "model.keras")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Flatten", "Dense", "Dropout", "Dense"]
    assert model.layers[1].units == cfg.dense.units and model.layers[-1].activation.__name__ == "sigmoid"
    summary = json.loads((d / "models" / "dense" / "summary.json").read_text())
    history = (d / "models" / "dense" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert 1 <= summary["best_epoch"] <= summary["epochs_run"] == len(history) - 1
    val_losses = [float(line.split(",")[3]) for line in history[1:]]
    assert summary["val_loss"] == pytest.approx(min(val_losses), abs=1e-5)  # best epoch kept


def test_finetune_unfreezes_only_top_blocks_and_keeps_batchnorm_frozen(trained):
    d, _ = trained
    model = keras.models.load_model(d / "models" / "finetune" / "model.keras")
    base = model.get_layer(BASE_NAME)
    trainable = sorted(layer.name for layer in base.layers if layer.trainable and layer.weights)
    assert trainable == ["conv_dw_13", "conv_pw_13"]
    assert not any(layer.trainable for layer in base.layers if "bn" in layer.name)


def test_evaluate_writes_metrics_and_plots(trained):
    d, _ = trained
    metrics = json.loads((d / "reports" / "metrics.json").read_text())
    for head in ("dense", "finetune"):
        m = metrics[head]
        assert m["n"] == 8 and sum(map(sum, m["confusion_matrix"])) == 8
        assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(m)
    # Colour classes are trivially separable even with random features: the dense head must learn them.
    assert metrics["dense"]["accuracy"] >= 0.75
    plots = {p.name for p in (d / "reports" / "plots").iterdir()}
    assert {"confusion_dense.png", "confusion_finetune.png", "roc.png", "curves_dense.png",
            "predictions_dense.csv", "roc_finetune.csv"} <= plots


def test_evaluate_on_another_labelled_folder(trained, tmp_path):
    d, cfg = trained
    other = make_dataset(tmp_path / "other", per_class=5, layout="flat")
    metrics = evaluate_folder(other, d / "models" / "dense", d / "models" / "finetune", tmp_path / "r",
                              cfg.backbone, cfg.evaluate)
    assert metrics["dense"]["n"] == metrics["finetune"]["n"] == 10
    (other / "zebras").mkdir()
    from tests.conftest import make_image
    make_image(other / "zebras" / "z.jpg", 2, 0)
    with pytest.raises(ValueError, match="zebras"):
        evaluate_folder(other, d / "models" / "dense", d / "models" / "finetune", tmp_path / "r2", cfg.backbone,
                        cfg.evaluate)
