"""Stage 4: the classic dense head on the cached features (Flatten -> Dense -> Dropout -> sigmoid/softmax)."""

from __future__ import annotations

from pathlib import Path

import keras

from pipeline.cli import execution_record, parser, run_cli, setup_logging
from pipeline.config import DenseConfig, load_config
from pipeline.files import log, read_json
from pipeline.layout import FEATURE_META_FILE
from pipeline.model.features import load_features
from pipeline.model.heads import build_dense_head
from pipeline.model.training import best_epoch_callback, class_weights, compile_for, save_training


def train_dense(feature_dir: Path, out_dir: Path, cfg: DenseConfig) -> dict:
    meta = read_json(feature_dir / FEATURE_META_FILE)
    classes = meta["classes"]
    x_train, y_train = load_features(feature_dir, "train")
    x_val, y_val = load_features(feature_dir, "validation")
    keras.utils.set_random_seed(cfg.seed)
    model = compile_for(
        build_dense_head(tuple(meta["feature_shape"]), len(classes), cfg), cfg.learning_rate, len(classes)
    )
    weights = class_weights(y_train, len(classes), cfg.class_weight)
    log.info(
        "training dense head on %d train / %d validation feature vectors (class weights %s)",
        len(x_train),
        len(x_val),
        weights,
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(x_val, y_val),
        callbacks=[best_epoch_callback(cfg.patience)],
        class_weight=weights,
        verbose=2,
    )
    summary = save_training(model, history, out_dir, classes, weights)
    log.info(
        "dense head: best epoch %d (val_loss %.4f, val_accuracy %.4f); saved to %s",
        summary["best_epoch"],
        summary["val_loss"],
        summary["val_accuracy"],
        out_dir,
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for model.keras, history.csv, summary.json")
    ap.add_argument("--execution", type=Path, required=True, help="JSON: training time")
    args = ap.parse_args(argv)
    setup_logging()
    with execution_record(args.execution) as facts:
        facts["epochs_run"] = train_dense(args.features, args.out, load_config(args.params).dense)["epochs_run"]


if __name__ == "__main__":
    run_cli(main)
