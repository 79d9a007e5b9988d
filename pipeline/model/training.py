"""What the two training stages share: the loss, the optimizer, class weights, best-epoch selection, and
saving a trained model with its history and summary (byte-identical for the same weights)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import TrainingConfig
from pipeline.contracts import TrainingSummary
from pipeline.files import JSON, atomic_path, csv_kind, files_in, log, write_csv, zip_kind
from pipeline.layout import HISTORY_FILE, MODEL_FILE, SUMMARY_FILE
from pipeline.model.checkpoint import Checkpoint, Resume

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
HISTORY_HEADER = ["epoch", *HISTORY_KEYS]
KERAS_MODEL = zip_kind("a Keras model (.keras)", "metadata.json")
# What save_training writes into a model folder, each file replacing only its own kind (the stages check it first).
TRAINING_OUTPUTS = files_in(
    "a model folder", {MODEL_FILE: KERAS_MODEL, HISTORY_FILE: csv_kind(HISTORY_HEADER), SUMMARY_FILE: JSON}
)
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def one_hot_targets(n_classes: int, label_smoothing: float) -> bool:
    """Keras smooths labels only for one-hot targets: so softmax heads train on one-hot labels when smoothing."""
    return n_classes > 2 and label_smoothing > 0


def targets(labels: np.ndarray, n_classes: int, label_smoothing: float) -> np.ndarray:
    """Integer labels as the loss of `loss_for` wants them."""
    if one_hot_targets(n_classes, label_smoothing):
        return np.asarray(np.eye(n_classes, dtype=np.float32)[labels])
    return labels


def loss_for(n_classes: int, label_smoothing: float = 0.0) -> keras.losses.Loss:
    if n_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if one_hot_targets(n_classes, label_smoothing):
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def optimizer_for(cfg: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """RMSprop or AdamW at cfg.learning_rate, or, with the cosine schedule, warming up linearly to it over
    warmup_epochs and decaying to 0 at the last epoch."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = cfg.learning_rate
    if cfg.schedule == "cosine":
        warmup = cfg.warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate / 100 if warmup else cfg.learning_rate,
            decay_steps=max(cfg.epochs * steps_per_epoch - warmup, 1),
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    decay = cfg.weight_decay or None
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=decay or 0.0)
    return keras.optimizers.RMSprop(rate, weight_decay=decay)


def compile_for(model: keras.Model, cfg: TrainingConfig, n_classes: int, steps_per_epoch: int) -> keras.Model:
    model.compile(
        optimizer=optimizer_for(cfg, steps_per_epoch),
        loss=loss_for(n_classes, cfg.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """ "balanced": n / (n_classes * count) per class, so every class weighs the same in the loss; "none": None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes)
    return {c: round(len(labels) / (n_classes * int(n)), 6) for c, n in enumerate(counts) if n}


def best_epoch_callback(patience: int | None) -> keras.callbacks.EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss (stop early after `patience`)."""
    return BestEpoch(patience)


class BestEpoch(keras.callbacks.EarlyStopping):
    """Keep the weights of the epoch with the lowest validation loss (stop early after `patience`). Given the
    starting weights' validation loss as `baseline`, patience runs until an epoch beats it: fine-tuning that never
    beats its start stops after `patience` epochs, one more when an epoch improves on the earlier ones (Keras never
    stops after the first), while the best fine-tuned epoch is still kept, for the stage's choice of what to ship
    (model/shipping.py), where the start is a candidate of its own. Given a checkpoint's state, it goes on from
    there."""

    def __init__(self, patience: int | None, baseline: float | None = None, resume: Resume | None = None):
        super().__init__(
            monitor="val_loss", patience=patience or 10**9, baseline=baseline, restore_best_weights=True, verbose=0
        )
        self.resume = resume

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        super().on_train_begin(logs)
        if self.resume is not None:
            r = self.resume
            self.best, self.best_epoch, self.wait, self.best_weights = r.best, r.best_epoch, r.wait, r.best_weights


def fit_from_start(
    model: keras.Model,
    data: Callable[[int], tf.data.Dataset],
    val: tf.data.Dataset,
    patience: int | None,
    *,
    epochs: int,
    steps_per_epoch: int,
    class_weight: dict[int, float] | None = None,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint: Checkpoint | None = None,
    beat_start: bool = False,
) -> keras.callbacks.History:
    """model.fit keeping the epoch of lowest val_loss; `callbacks` run after the best-epoch one (e.g. live
    logging). `data(first)`: the training batches of the epochs from `first` (0-based) to the last,
    `steps_per_epoch` per epoch. With `beat_start`, patience lasts until an epoch beats the starting weights'
    validation loss (BestEpoch's baseline). With a `checkpoint`, resumes from it when it is of the same inputs and
    saves it after every epoch. Returns the (whole) history."""
    resume = checkpoint.load(model) if checkpoint else None
    baseline = None
    if beat_start:
        baseline = resume.baseline if resume else float(model.evaluate(val, verbose=0)[0])
    best = BestEpoch(patience, baseline, resume)
    saver = [checkpoint.saver(best, resume)] if checkpoint else []
    first = resume.epoch if resume else 0
    if resume and resume.stopped:  # stopped early at its last epoch: only the best weights remain to restore
        epochs = first
    history = model.fit(
        data(first),
        validation_data=val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        class_weight=class_weight,
        verbose=verbose,
        callbacks=[best, *saver, *callbacks],
        shuffle=False,
        initial_epoch=first,
    )
    if resume:
        history.history = {key: resume.history[key] + history.history.get(key, []) for key in resume.history}
    return history


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, made reproducible, so the same weights always get the same DVC hash and what is downstream can
    come from DVC's run-cache or remote. Keras stamps the archive with the save date (metadata.json's date_saved,
    each zip entry's time) and numbers objects shared between layers by their memory address (config.json's
    shared_object_id): the date is dropped, the entries get one fixed time, the ids become 1, 2, ... in order."""
    with atomic_path(path, KERAS_MODEL) as tmp:
        model.save(tmp)
        stamped = tmp.with_name(tmp.name + ".stamped")
        tmp.rename(stamped)
        with zipfile.ZipFile(stamped) as src, zipfile.ZipFile(tmp, "w") as out:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "metadata.json":
                    meta = json.loads(data)
                    meta.pop("date_saved", None)
                    data = json.dumps(meta).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
                out.writestr(zipfile.ZipInfo(info.filename, ZIP_EPOCH), data, compress_type=info.compress_type)
        stamped.unlink()


def _renumber_shared(node: object, ids: dict[int, int]) -> object:
    """`node` with each shared_object_id replaced by its rank of first appearance; equal ids stay equal, so
    loading shares the same objects as before."""
    if isinstance(node, dict):
        return {
            key: ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" else _renumber_shared(value, ids)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared(value, ids) for value in node]
    return node


def summarize(
    history: keras.callbacks.History, classes: list[str], weights: dict[int, float] | None
) -> TrainingSummary:
    """A model's summary.json from its history: the epoch of lowest val_loss is the one kept."""
    hist = history.history
    best = int(np.argmin(hist["val_loss"]))
    return TrainingSummary(
        classes=classes,
        epochs_run=len(hist["loss"]),
        best_epoch=best + 1,
        val_loss=round(float(hist["val_loss"][best]), 6),
        val_accuracy=round(float(hist["val_accuracy"][best]), 6),
        class_weight=None if weights is None else {classes[c]: w for c, w in weights.items()},
    )


def save_training(
    model: keras.Model, history: keras.callbacks.History, out_dir: Path, summary: TrainingSummary
) -> None:
    """Write model.keras, history.csv and summary.json atomically into `out_dir`."""
    hist = history.history
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir / MODEL_FILE)
    write_csv(
        out_dir / HISTORY_FILE,
        HISTORY_HEADER,
        [[e + 1, *(f"{hist[k][e]:.6f}" for k in HISTORY_KEYS)] for e in range(len(hist["loss"]))],
    )
    summary.save(out_dir / SUMMARY_FILE)
    log.info(
        "%s: best epoch %d (val_loss %.4f, val_accuracy %.4f); saved to %s",
        model.name,
        summary.best_epoch,
        summary.val_loss,
        summary.val_accuracy,
        out_dir,
    )
