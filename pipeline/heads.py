"""What the two training stages share: the classifier output, the loss, best-epoch selection, saving."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import keras
import numpy as np

from pipeline.io import atomic_path, write_json, write_text

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def output_layer(n_classes: int) -> keras.layers.Layer:
    """Sigmoid unit for two classes, softmax otherwise."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction")
    return keras.layers.Dense(n_classes, activation="softmax", name="prediction")


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def best_epoch_callback(patience: int | None) -> keras.callbacks.EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss (stop early after `patience`)."""
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience or 10**9, restore_best_weights=True, verbose=0
    )


def probabilities(model: keras.Model, x, n_classes: int, **kw) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), whichever output layer the model has."""
    p = np.asarray(model.predict(x, verbose=0, **kw), dtype=np.float64)
    return np.concatenate([1 - p, p], axis=1) if n_classes == 2 else p


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
