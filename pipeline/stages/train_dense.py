"""Stage 4: the dense head on the cached features: pooling (or the classic Flatten), an optional hidden layer,
dropout, sigmoid/softmax; dense.ensemble heads with consecutive seeds, averaged into one model. With dense.flip,
the mirrored train images' features (cached by extract) are training examples too: flip augmentation for free."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import DenseConfig, load_config
from pipeline.files import JSON, log, read_json
from pipeline.layout import FEATURE_META_FILE
from pipeline.model.features import load_features, load_train_features
from pipeline.model.heads import build_dense_head, ensemble
from pipeline.model.training import (
    TRAINING_OUTPUTS,
    best_epoch_callback,
    class_weights,
    compile_for,
    save_training,
    targets,
)
from pipeline.tracking.live import LiveRun, live_training

Split = tuple[np.ndarray, np.ndarray]  # features, integer labels


def fit_member(
    train: Split,
    val: Split,
    shape: tuple[int, ...],
    n: int,
    cfg: DenseConfig,
    member: int,
    weights,
    live: LiveRun | None = None,
):
    """One head, seeded with seed + member; returns (model at its best epoch, history). `live` watches it
    (the first member under the plain metric names, history.csv's)."""
    keras.utils.set_random_seed(cfg.seed + member)
    name = "dense_head" if cfg.ensemble == 1 else f"member_{member}"
    steps = math.ceil(len(train[0]) / cfg.batch_size)
    model = compile_for(build_dense_head(shape, n, cfg, name), cfg, n, steps)
    watch = [live.callback(f"member_{member}/" if member else "")] if live else []
    history = model.fit(
        train[0],
        targets(train[1], n, cfg.label_smoothing),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(val[0], targets(val[1], n, cfg.label_smoothing)),
        callbacks=[best_epoch_callback(cfg.patience), *watch],
        class_weight=weights,
        verbose=2,
    )
    return model, history


def train_dense(feature_dir: Path, out_dir: Path, cfg: DenseConfig, live: LiveRun | None = None) -> dict:
    meta = read_json(feature_dir / FEATURE_META_FILE)
    classes, shape = meta["classes"], tuple(meta["feature_shape"])
    n = len(classes)
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
    fitted = [fit_member(train, val, shape, n, cfg, k, weights, live) for k in range(cfg.ensemble)]
    model, extra = fitted[0][0], {}
    if cfg.ensemble > 1:  # the saved model averages them; its validation scores are the ensemble's
        model = compile_for(ensemble([m for m, _ in fitted]), cfg, n, 1)
        loss, accuracy = model.evaluate(val[0], targets(val[1], n, cfg.label_smoothing), verbose=0)
        extra = {
            "val_loss": round(float(loss), 6),
            "val_accuracy": round(float(accuracy), 6),
            "members": cfg.ensemble,
            "member_best_epochs": [int(np.argmin(h.history["val_loss"])) + 1 for _, h in fitted],
            "member_epochs_run": [len(h.history["loss"]) for _, h in fitted],
        }
    summary = save_training(model, fitted[0][1], out_dir, classes, weights, extra)  # curves: the first member's
    return summary


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
        summary = train_dense(args.features, args.out, cfg.dense, live)
        facts["epochs_run"] = sum(summary.get("member_epochs_run", [summary["epochs_run"]]))  # all members' epochs


if __name__ == "__main__":
    run_cli(main)
