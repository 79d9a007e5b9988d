"""What the two training stages share: the classifier output, the loss, class weights, best-epoch selection,
saving; and turning a model's output into class probabilities (evaluate, predict, the served model)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import keras
import numpy as np

from pipeline.backbone import image_dataset
from pipeline.io import atomic_path, write_json, write_text

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def output_layer(n_classes: int) -> keras.layers.Layer:
    """Sigmoid unit for two classes, softmax otherwise."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction")
    return keras.layers.Dense(n_classes, activation="softmax", name="prediction")


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """"balanced": n / (n_classes * count) per class, so every class weighs the same in the loss; "none": None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes)
    return {c: round(len(labels) / (n_classes * int(n)), 6) for c, n in enumerate(counts) if n}


def best_epoch_callback(patience: int | None) -> keras.callbacks.EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss (stop early after `patience`)."""
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience or 10**9, restore_best_weights=True, verbose=0
    )


def probabilities(model: keras.Model, x, n_classes: int, **kw) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), whichever output layer the model has."""
    p = np.asarray(model.predict(x, verbose=0, **kw), dtype=np.float64)
    return np.concatenate([1 - p, p], axis=1) if n_classes == 2 else p


def image_probabilities(model: keras.Model, paths: list[str], n_classes: int, size: int,
                        flip: bool = False) -> np.ndarray:
    """Probabilities for image files, decoded and resized exactly as for training (optionally mirrored)."""
    return probabilities(model, image_dataset(paths, None, size, batch_size=32, flip=flip), n_classes)


def mirror_average(probs: np.ndarray, image_model: keras.Model, paths: list[str], n_classes: int, size: int,
                   tta_flip: bool) -> np.ndarray:
    """Test-time augmentation (evaluate.tta_flip): the mean with the prediction for the mirrored images."""
    if not tta_flip:
        return probs
    return (probs + image_probabilities(image_model, paths, n_classes, size, flip=True)) / 2


def save_training(model: keras.Model, history: keras.callbacks.History, out_dir: Path,
                  classes: list[str], extra: dict) -> dict:
    """Write model.keras, history.csv and summary.json atomically into `out_dir`; return the summary."""
    hist = history.history
    epochs = len(hist["loss"])
    best = int(np.argmin(hist["val_loss"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *HISTORY_KEYS])
    for e in range(epochs):
        writer.writerow([e + 1, *(f"{hist[k][e]:.6f}" for k in HISTORY_KEYS)])
    summary = {
        "classes": classes, "epochs_run": epochs, "best_epoch": best + 1,
        "val_loss": round(float(hist["val_loss"][best]), 6),
        "val_accuracy": round(float(hist["val_accuracy"][best]), 6), **extra,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.keras") as tmp:
        model.save(tmp)
    write_text(out_dir / "history.csv", buf.getvalue())
    write_json(out_dir / "summary.json", summary)
    return summary
