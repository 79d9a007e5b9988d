"""Stage 4: the classic dense head on the cached features (Flatten -> Dense -> Dropout -> sigmoid/softmax)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras

from pipeline.config import DenseConfig, load_config
from pipeline.extract import load_features
from pipeline.heads import best_epoch_callback, class_weights, loss_for, output_layer, save_training
from pipeline.io import log, read_json, run_cli, setup_logging


def build_dense_head(feature_shape: tuple[int, ...], n_classes: int, cfg: DenseConfig) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(feature_shape, name="features"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(cfg.units, activation=cfg.activation, name="dense"),
            keras.layers.Dropout(cfg.dropout, name="dropout"),
            output_layer(n_classes),
        ],
        name="dense_head",
    )


def train_dense(feature_dir: Path, out_dir: Path, cfg: DenseConfig) -> dict:
    meta = read_json(feature_dir / "meta.json")
    classes = meta["classes"]
    x_train, y_train = load_features(feature_dir, "train")
    x_val, y_val = load_features(feature_dir, "validation")
    keras.utils.set_random_seed(cfg.seed)
    model = build_dense_head(tuple(meta["feature_shape"]), len(classes), cfg)
    model.compile(optimizer=keras.optimizers.RMSprop(cfg.learning_rate), loss=loss_for(len(classes)),
                  metrics=["accuracy"])
    weights = class_weights(y_train, len(classes), cfg.class_weight)
    log.info("training dense head on %d train / %d validation feature vectors (class weights %s)", len(x_train),
             len(x_val), weights)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
                        validation_data=(x_val, y_val), callbacks=[best_epoch_callback(cfg.patience)],
                        class_weight=weights, verbose=2)
    summary = save_training(model, history, out_dir, classes,
                            {"train_seconds": round(time.perf_counter() - start, 1),
                             "class_weight": weights and {classes[c]: w for c, w in weights.items()}})
    log.info("dense head: best epoch %d (val_loss %.4f, val_accuracy %.4f); saved to %s",
             summary["best_epoch"], summary["val_loss"], summary["val_accuracy"], out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for model.keras, history.csv, summary.json")
    args = ap.parse_args(argv)
    setup_logging()
    train_dense(args.features, args.out, load_config(args.params).dense)


if __name__ == "__main__":
    run_cli(main)
