"""Grad-CAM, the galleries and the HTML report, on untrained fine-tune models (no training needed to check them):
64 px input, so the last conv grid is 2x2 and a heatmap has some shape."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.contracts import Metrics, TrainingSummary
from pipeline.evaluation.explain import gradcam_parts, heatmaps, overlay, write_explanations
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.report import main as report_main
from pipeline.evaluation.report import write_report
from pipeline.layout import PARAMS_FILE
from pipeline.model.heads import build_dense_head, build_finetune_parts
from pipeline.model.parts import finetune_parts
from tests.helpers import REPO
from tests.helpers.images import make_image
from tests.helpers.params import tiny_config

SIZE = 64


@pytest.fixture(scope="module")
def models():
    """The parts of untrained fine-tune models (augmentation included, as train_finetune builds them) for 2 and 3
    classes."""
    keras.utils.set_random_seed(0)
    cfg = tiny_config({"backbone": {"image_size": SIZE}, "dense": {"units": 8}, "finetune": {"unfreeze_blocks": 1}})
    out = {}
    for n in (2, 3):
        head = build_dense_head((2, 2, 1024), n, cfg.dense)
        out[n] = build_finetune_parts(head, cfg.backbone, cfg.finetune)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(6):
        make_image(folder / f"{i}.jpg", i % 3, i)
        paths.append(str(folder / f"{i}.jpg"))
    pixels = np.stack([np.asarray(Image.open(p).resize((SIZE, SIZE)), np.float32) for p in paths])
    return paths, pixels


@pytest.mark.parametrize("n", [2, 3])
def test_gradcam_parts_reproduce_the_model_without_augmentation(models, images, n):
    parts = gradcam_parts(models[n])
    x = images[1]
    conv = parts.conv(x)  # no training flag: augmentation must not be part of it
    np.testing.assert_array_equal(conv.numpy(), parts.conv(x).numpy())
    scores = parts.scores(conv).numpy()
    probs = 1 / (1 + np.exp(-scores)) if n == 2 else np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, models[n].model.predict(x, verbose=0), atol=1e-5)
    assert conv.shape[1:3] == (2, 2)


def test_heatmaps_are_scaled_per_image_and_follow_the_class(models, images):
    x = images[1]
    parts = gradcam_parts(models[2])
    cams = {c: heatmaps(parts, x, np.full(len(x), c)) for c in (0, 1)}
    for cam in cams.values():
        assert cam.shape == (6, 2, 2) and cam.min() >= 0 and cam.max() <= 1
        assert all(m.max() in (0.0, 1.0) for m in cam)
    # Sigmoid: class 0's score is minus class 1's, so their positive evidence never overlaps.
    assert (cams[0] * cams[1] == 0).all() and (cams[0] + cams[1]).max() > 0
    three = gradcam_parts(models[3])
    assert not np.allclose(heatmaps(three, x, np.zeros(6, int)), heatmaps(three, x, np.full(6, 2)))
    blended = overlay(x[0], cams[1][0])
    assert blended.shape == (SIZE, SIZE, 3) and blended.dtype == np.uint8


def test_a_model_without_mobilenet_is_rejected():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="conv base"):
        finetune_parts(model)


def _evaluate(**keys):
    return tiny_config({"evaluate": keys}).evaluate


def _probs(y: np.ndarray, n: int, wrong: list[int]) -> np.ndarray:
    p = np.full((len(y), n), 0.1)
    p[np.arange(len(y)), y] = 0.8
    for i in wrong:
        p[i] = np.roll(p[i], 1)
    return p / p.sum(axis=1, keepdims=True)


def test_galleries_and_self_contained_report(models, images, tmp_path):
    paths, _ = images
    classes = ["birds", "cats", "r&d <x>"]
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = {"dense": _probs(y, 3, [0, 4]), "finetune": _probs(y, 3, [])}
    plots = tmp_path / "reports" / "plots"
    written = write_explanations(
        plots, models[3].model, paths, y, probs, classes, SIZE, _evaluate(explain_per_class=2, misclassified_max=1)
    )
    assert [p.name for p in written] == [
        "gradcam_finetune.png",
        "misclassified_dense.png",
        "misclassified_finetune.png",
    ]
    for p in written:
        assert Image.open(p).format == "PNG"
    assert (
        write_explanations(
            tmp_path / "none",
            models[3].model,
            paths,
            y,
            probs,
            classes,
            SIZE,
            _evaluate(explain_per_class=0, misclassified_max=0),
        )
        == []
    )

    metrics = Metrics({h: classification_metrics(y, p, classes) for h, p in probs.items()})
    metrics.save(tmp_path / "reports" / "metrics.json")
    model_dir = tmp_path / "finetune"
    summary = TrainingSummary(
        classes=classes, epochs_run=2, best_epoch=1, val_loss=0.5, val_accuracy=0.5, class_weight={"birds": 1.5}
    )
    summary.save(model_dir / "summary.json")
    params = REPO / PARAMS_FILE
    cfg = load_config(params)
    html = write_report(tmp_path / "reports", metrics, {"finetune": summary}, {"finetune": model_dir}, cfg).read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched: opens offline
    assert html.count("data:image/png;base64,") == 3
    assert "r&amp;d &lt;x&gt;" in html and "<x>" not in html
    assert "misclassified_dense.png" in html and "birds: 1.5" in html
    (tmp_path / "reports" / "report.html").unlink()
    assert f"<code>{Path(paths[0]).name}</code>" in html  # the one image shown in dense's gallery, named
    assert f"<h1>{cfg.data.name}: evaluation report</h1>" in html
    report_main(["--reports", str(tmp_path / "reports"), "--finetune", str(model_dir), "--params", str(params)])
    assert (tmp_path / "reports" / "report.html").read_text() == html
