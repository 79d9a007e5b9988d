"""Stage 5: MobileNet + the trained dense head, top conv blocks unfrozen, low learning rate, augmentation.

The saved model takes raw RGB pixels in [0, 255]. With no augmentation but flips, the frozen layers run once
(model/finetune.py). With several GPUs visible, the model trains on all of them (finetune.multi_gpu), each batch
split across them.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from pipeline.cli import execution_record, parser, run_cli, setup_logging
from pipeline.config import BackboneConfig, FinetuneConfig, load_config
from pipeline.data.manifest import classes_of, read_manifest, split_rows
from pipeline.files import log
from pipeline.model.devices import distribution
from pipeline.model.finetune import Split, cacheable, fit_cached
from pipeline.model.heads import build_finetune_model
from pipeline.model.inputs import image_dataset
from pipeline.model.training import class_weights, compile_for, fit_from_start, save_training, targets


def train_finetune(
    manifest: Path, dense_model: Path, out_dir: Path, backbone: BackboneConfig, cfg: FinetuneConfig
) -> dict:
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    n = len(classes)

    def split(name: str) -> Split:
        part = split_rows(rows, name)
        return [r.path for r in part], np.array([classes.index(r.label) for r in part])

    train, val = split("train"), split("validation")
    keras.utils.set_random_seed(cfg.seed)
    strategy = distribution(cfg.multi_gpu)
    with strategy.scope():
        head = keras.models.load_model(dense_model, compile=False)  # its optimizer state would bloat the model
        steps = math.ceil(len(train[0]) / cfg.batch_size)
        model = compile_for(build_finetune_model(head, backbone, cfg), cfg, n, steps)
    weights = class_weights(train[1], n, cfg.class_weight)
    log.info(
        "fine-tuning on %d train / %d validation images (class weights %s, %d replica(s))",
        len(train[0]),
        len(val[0]),
        weights,
        strategy.num_replicas_in_sync,
    )
    fit = dict(epochs=cfg.epochs, class_weight=weights, verbose=2)
    result = (
        fit_cached(model, head, strategy, train, val, backbone.image_size, cfg, n, out_dir, **fit)
        if cacheable(cfg)
        else None
    )
    if result is None:
        size, batch = backbone.image_size, cfg.batch_size
        y_train, y_val = (targets(y, n, cfg.label_smoothing) for y in (train[1], val[1]))
        result = fit_from_start(  # the training dataset reshuffles itself each epoch
            model,
            image_dataset(train[0], y_train, size, batch, shuffle_seed=cfg.seed),
            image_dataset(val[0], y_val, size, batch),
            cfg.patience,
            **fit,
        )
    history, start_won = result
    summary = save_training(model, history, out_dir, classes, weights, start_won)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--dense-model", type=Path, required=True, help="model.keras from train_dense")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--execution", type=Path, required=True, help="JSON: training time, epochs run")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params)
    with execution_record(args.execution) as facts:
        summary = train_finetune(args.manifest, args.dense_model, args.out, cfg.backbone, cfg.finetune)
        facts["epochs_run"] = summary["epochs_run"]


if __name__ == "__main__":
    run_cli(main)
