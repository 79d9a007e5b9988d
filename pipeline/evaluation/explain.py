"""Why the models decide as they do: Grad-CAM heatmaps for a sample of test images per class, and a gallery of
the misclassified test images, as evaluation plots.

Grad-CAM (Selvaraju et al., 2017): the last conv block's activation maps (the MobileNet base's output, a handle
from model/parts.py), each weighted by the spatial mean of the gradient of the predicted class's score, summed, the
positive part scaled to [0, 1]. The score is taken before the sigmoid / softmax, whose saturation would flatten it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib
import numpy as np
import tensorflow as tf

from pipeline.config import EvaluateConfig
from pipeline.evaluation.plots import plt, save_figure
from pipeline.files import write_csv
from pipeline.layout import gradcam_png, misclassified_csv, misclassified_png
from pipeline.model.heads import head_logits
from pipeline.model.inputs import load_image
from pipeline.model.parts import FinetuneParts
from pipeline.model.shipping import fine_tuned_part

MAX_CLASSES_SHOWN = 12  # rows of the Grad-CAM figure; more classes would make it unreadably tall
GALLERY_COLUMNS = 6
BATCH = 32  # images per gradient pass: bounds memory at full image size
MISCLASSIFIED_COLUMNS = ["file", "true", "predicted", "confidence"]  # of layout.misclassified_csv


@dataclass(frozen=True)
class GradCam:
    """The model cut at the last conv activations: the gradient is taken through `scores` only."""

    conv: keras.Model  # image -> conv activations
    scores: keras.Model  # conv activations -> class scores before the sigmoid / softmax


def gradcam_parts(parts: FinetuneParts) -> GradCam:
    """Cut an image model at its base's output. Augmentation is left out: identity at inference, but active by
    default when called."""
    image = keras.Input(parts.model.inputs[0].shape[1:])
    return GradCam(keras.Model(image, parts.base(parts.preprocessing(image))), head_logits(parts.head))


def heatmaps(parts: GradCam, images: np.ndarray, class_idx: np.ndarray) -> np.ndarray:
    """(n, h, w) maps in [0, 1] on the conv grid: where image i supports class class_idx[i]."""
    out = []
    for start in range(0, len(images), BATCH):
        conv = parts.conv(tf.convert_to_tensor(images[start : start + BATCH], tf.float32), training=False)
        idx = tf.constant(class_idx[start : start + BATCH], tf.int32)
        with tf.GradientTape() as tape:
            tape.watch(conv)
            scores = parts.scores(conv, training=False)
            if scores.shape[-1] == 1:  # sigmoid: the logit is class 1's score, its negative class 0's
                score = scores[:, 0] * tf.where(idx == 1, 1.0, -1.0)
            else:
                score = tf.gather(scores, idx, axis=1, batch_dims=1)
        grads = tape.gradient(score, conv)  # per image: BatchNorm is in inference mode, images don't interact
        cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * conv, axis=-1)).numpy()
        peak = cam.max(axis=(1, 2), keepdims=True)
        out.append(np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0))
    return np.concatenate(out) if out else np.zeros((0, 0, 0))


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB pixels 0..255 with the heatmap, upsampled bilinearly to the image, blended in (jet colours)."""
    up = tf.image.resize(cam[..., None], image.shape[:2]).numpy()[..., 0]
    heat = np.asarray(matplotlib.colormaps["jet"](up))[..., :3] * 255
    return ((1 - alpha) * image + alpha * heat).clip(0, 255).astype(np.uint8)


Cell = tuple[np.ndarray, str, bool]  # image, caption, correct


def _figure(rows: list[list[Cell]], title: str, row_labels: list[str] | None = None) -> plt.Figure:
    if not rows:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, title, ha="center", va="center")
        return fig
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 2.4 * len(rows) + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_frame_on(False)
                continue
            image, caption, correct = row[c]
            ax.imshow(image)
            ax.set_title(caption, fontsize=8, color="tab:green" if correct else "tab:red")
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _pixels(paths: list[str], idx: np.ndarray, size: int) -> np.ndarray:
    """The model's input for the images `idx`: decoded and resized as in training, 0..255."""
    return np.stack([load_image(paths[i], size).numpy() for i in idx]) if len(idx) else np.zeros((0, size, size, 3))


def _gradcam_figure(
    parts: GradCam, paths: list[str], y: np.ndarray, p: np.ndarray, classes: list[str], size: int, per_class: int
) -> plt.Figure:
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    shown = range(min(len(classes), MAX_CLASSES_SHOWN))
    rows = []
    for c in shown:
        idx = np.flatnonzero(y == c)[:per_class]
        images = _pixels(paths, idx, size)
        rows.append(
            [
                (overlay(img, cam), f"{classes[pred[i]]} {conf[i]:.2f}", pred[i] == y[i])
                for i, img, cam in zip(idx, images, heatmaps(parts, images, pred[idx]))
            ]
        )
    more = f" (first {len(shown)} of {len(classes)} classes)" if len(classes) > len(shown) else ""
    return _figure(
        rows, f"finetune: Grad-CAM of the predicted class, rows = true class{more}", [classes[c] for c in shown]
    )


def _misclassified_figure(
    head: str,
    parts: GradCam | None,
    paths: list[str],
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    size: int,
    limit: int,
) -> tuple[plt.Figure, list[tuple[str, str, str, str]]]:
    """The `limit` most confidently wrong images, Grad-CAM overlaid when `parts` is given, and their file name,
    true and predicted class and confidence, in the gallery's order."""
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    idx = wrong[np.argsort(-conf[wrong], kind="stable")][:limit]
    pixels = _pixels(paths, idx, size)
    images = list(pixels)
    if parts is not None:
        images = [overlay(img, cam) for img, cam in zip(pixels, heatmaps(parts, pixels, pred[idx]))]
    cells = [
        (np.asarray(img, np.uint8), f"{classes[y[i]]} → {classes[pred[i]]} {conf[i]:.2f}", False)
        for i, img in zip(idx, images)
    ]
    title = f"{head}: {len(wrong)} of {len(y)} test images misclassified (true → predicted)" + (
        f", the {len(cells)} most confident shown" if len(cells) < len(wrong) else ""
    )
    names = [(Path(paths[i]).name, classes[y[i]], classes[pred[i]], f"{conf[i]:.4f}") for i in idx]
    return _figure([cells[i : i + GALLERY_COLUMNS] for i in range(0, len(cells), GALLERY_COLUMNS)], title), names


def write_explanations(
    plots: Path,
    model: keras.Model,
    paths: list[str],
    y: np.ndarray,
    probs: dict[str, np.ndarray],
    classes: list[str],
    size: int,
    cfg: EvaluateConfig,
) -> list[Path]:
    """Under `plots`: the fine-tuned model's Grad-CAM (explain_per_class test images of each class) and each
    head's gallery (the misclassified_max most confidently wrong, Grad-CAM overlaid for the fine-tuned `model`),
    with a CSV beside each gallery naming its images (layout: gradcam_png, misclassified_png, misclassified_csv);
    the PNGs' paths."""
    if not (cfg.explain_per_class or cfg.misclassified_max):
        return []
    parts = gradcam_parts(fine_tuned_part(model))  # of an average, its fine-tuned model's maps
    figures = {}
    if cfg.explain_per_class:
        figures[gradcam_png("finetune")] = _gradcam_figure(
            parts, paths, y, probs["finetune"], classes, size, cfg.explain_per_class
        )
    if cfg.misclassified_max:
        for head, p in probs.items():
            figures[misclassified_png(head)], names = _misclassified_figure(
                head, parts if head == "finetune" else None, paths, y, p, classes, size, cfg.misclassified_max
            )
            write_csv(plots / misclassified_csv(head), MISCLASSIFIED_COLUMNS, names)  # the report lists them
    for name, fig in figures.items():
        save_figure(fig, plots / name)
    return [plots / name for name in figures]
