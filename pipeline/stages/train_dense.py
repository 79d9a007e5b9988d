"""Stage 4: the dense head on the cached features: pooling (or the classic Flatten), an optional hidden layer,
dropout, sigmoid/softmax; dense.ensemble heads with consecutive seeds, averaged into one model. With dense.flip,
the mirrored train images' features (cached by extract) are training examples too: flip augmentation for free.

An ensemble's history.csv is the averaged model's: after epoch e, each member with the weights a run ending there
keeps (those of its lowest val_loss so far), scored on train (no dropout) and validation; its last row is the
saved model, every member at its best epoch (summary.json's best_epoch). MLflow gets each member's own epochs as
member_<k>/loss, ... and the ensemble's rows under the plain names."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import DenseConfig, load_config
from pipeline.contracts import FeatureMeta, TrainingSummary
from pipeline.files import JSON, log
from pipeline.layout import FEATURE_META_FILE
from pipeline.model.features import load_features, load_train_features
from pipeline.model.heads import build_dense_head, ensemble
from pipeline.model.training import (
    HISTORY_KEYS,
    TRAINING_OUTPUTS,
    best_epoch_callback,
    class_weights,
    compile_for,
    save_training,
    summarize,
    targets,
)
from pipeline.tracking.live import LiveRun, live_training

FeatureSplit = tuple[np.ndarray, np.ndarray]  # features, integer labels
Weights = list[np.ndarray]  # a model's get_weights()
Fitted = tuple[keras.Model, keras.callbacks.History, list[Weights]]  # a member, its history, KeptWeights.weights


def fit_member(
    train: FeatureSplit,
    val: FeatureSplit,
    shape: tuple[int, ...],
    n: int,
    cfg: DenseConfig,
    member: int,
    weights: dict[int, float] | None,
    live: LiveRun | None = None,
) -> Fitted:
    """One head, seeded with seed + member; returns (model at its best epoch, history, the weights it kept after
    each epoch). `live` watches it (a lone head under the plain metric names, history.csv's; a member as
    member_<member + 1>/…)."""
    keras.utils.set_random_seed(cfg.seed + member)
    name = "dense_head" if cfg.ensemble == 1 else f"member_{member}"
    steps = math.ceil(len(train[0]) / cfg.batch_size)
    model = compile_for(build_dense_head(shape, n, cfg, name), cfg, n, steps)
    kept = KeptWeights()
    watch = [live.callback(f"member_{member + 1}/" if cfg.ensemble > 1 else "")] if live else []
    history = model.fit(
        train[0],
        targets(train[1], n, cfg.label_smoothing),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(val[0], targets(val[1], n, cfg.label_smoothing)),
        callbacks=[best_epoch_callback(cfg.patience), kept, *watch],
        class_weight=weights,
        verbose=2,
    )
    return model, history, kept.weights


class KeptWeights(keras.callbacks.Callback):
    """After each epoch, the weights that BestEpoch would keep if training ended there (the lowest val_loss so
    far; the first of equals). It only reads the weights: training is the same with it."""

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.weights: list[Weights] = []
        self._best = np.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:  # Keras passes the epoch's logs
        if logs["val_loss"] < self._best:
            self._best, self.weights = logs["val_loss"], [*self.weights, self.model.get_weights()]
        else:
            self.weights = [*self.weights, self.weights[-1]]


def ensemble_history(
    model: keras.Model,
    members: list[keras.Model],
    kept: list[list[Weights]],
    train: FeatureSplit,
    val: FeatureSplit,
    cfg: DenseConfig,
    n: int,
) -> dict[str, list[float]]:
    """The averaged `model`'s history.csv columns, epoch by epoch (module docstring); the members end with the
    weights they have now (their best), so the last row is `model` as saved."""
    final = [m.get_weights() for m in members]
    scored: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    for epoch in range(max(map(len, kept))):
        last = epoch == max(map(len, kept)) - 1
        for member, weights, after in zip(members, final, kept):
            member.set_weights(weights if last else after[min(epoch, len(after) - 1)])
        for prefix, (x, y) in (("", train), ("val_", val)):
            loss, accuracy = model.evaluate(x, targets(y, n, cfg.label_smoothing), verbose=0)
            scored[f"{prefix}loss"].append(loss)
            scored[f"{prefix}accuracy"].append(accuracy)
    return scored


def train_dense(feature_dir: Path, out_dir: Path, cfg: DenseConfig, live: LiveRun | None = None) -> TrainingSummary:
    meta = FeatureMeta.load(feature_dir / FEATURE_META_FILE)
    n = len(meta.classes)
    train, val = load_train_features(feature_dir, cfg.flip), load_features(feature_dir, "validation")
    weights = class_weights(train[1], n, cfg.class_weight)
    log.info(
        "training %d dense head(s) (%s pooling) on %d train%s / %d validation feature vectors (class weights %s)",
        cfg.ensemble,
        cfg.pooling,
        len(train[0]),
        " (plain + mirrored)" if cfg.flip else "",
        len(val[0]),
        weights,
    )
    fitted = [fit_member(train, val, meta.feature_shape, n, cfg, k, weights, live) for k in range(cfg.ensemble)]
    if cfg.ensemble == 1:
        model, history, _ = fitted[0]
        summary = summarize(history, meta.classes, weights)
    else:
        model, history, summary = _ensemble(fitted, train, val, cfg, meta.classes, weights, live)
    save_training(model, history, out_dir, summary)
    return summary


def _ensemble(
    fitted: list[Fitted],
    train: FeatureSplit,
    val: FeatureSplit,
    cfg: DenseConfig,
    classes: list[str],
    weights: dict[int, float] | None,
    live: LiveRun | None,
) -> tuple[keras.Model, keras.callbacks.History, TrainingSummary]:
    """The saved model averages the members: its curves and scores are the ensemble's, its best epoch the last
    row (every member at its best)."""
    n = len(classes)
    members = [m for m, _, _ in fitted]
    model = compile_for(ensemble(members), cfg, n, 1)
    history = keras.callbacks.History()
    history.history = ensemble_history(model, members, [k for _, _, k in fitted], train, val, cfg, n)
    epochs = len(history.history["val_loss"])
    summary = summarize(history, classes, weights).model_copy(
        update={
            "best_epoch": epochs,
            "val_loss": round(float(history.history["val_loss"][-1]), 6),
            "val_accuracy": round(float(history.history["val_accuracy"][-1]), 6),
            "members": cfg.ensemble,
            "member_best_epochs": [int(np.argmin(h.history["val_loss"])) + 1 for _, h, _ in fitted],
            "member_epochs_run": [len(h.history["loss"]) for _, h, _ in fitted],
        }
    )
    if live:  # the ensemble's rows under the plain names, as for a lone head
        logger = live.callback("")
        for epoch in range(epochs):
            logger.on_epoch_end(epoch, {key: values[epoch] for key, values in history.history.items()})
    return model, history, summary


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument(
        "--out", type=output(TRAINING_OUTPUTS), required=True, help="folder for model.keras, history.csv, summary.json"
    )
    ap.add_argument("--execution", type=output(JSON), required=True, help="JSON: training time")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params, args.dataset)
    # Per-epoch metrics in MLflow while it trains, when a server is configured (never waited on).
    with execution_record(args.execution) as facts, live_training(cfg.data.name, "dense", "train_dense", facts) as live:
        facts["epochs_run"] = train_dense(args.features, args.out, cfg.dense, live).all_epochs_run


if __name__ == "__main__":
    run_cli(main)
