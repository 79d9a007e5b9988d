"""Stage 5: MobileNet + the trained dense head, top conv blocks unfrozen, low learning rate, augmentation.

BatchNorm layers stay in inference mode (the base is called with training=False) so their ImageNet
statistics are not wrecked by small batches. The saved model takes raw RGB pixels in [0, 255].
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras

from pipeline.backbone import conv_base, image_dataset, preprocessing_layer, unfreeze_top_blocks
from pipeline.config import AugmentConfig, BackboneConfig, FinetuneConfig, load_config
from pipeline.heads import best_epoch_callback, loss_for, save_training
from pipeline.io import log, setup_logging
from pipeline.manifest import classes_of, read_manifest, split_rows


def augmentation(cfg: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    return layers


def build_finetune_model(head: keras.Model, backbone: BackboneConfig, cfg: FinetuneConfig) -> keras.Model:
    base = conv_base(backbone)
    trainable = unfreeze_top_blocks(base, cfg.unfreeze_blocks)
    log.info("fine-tuning %d conv layers: %s", len(trainable), trainable)
    size = backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in augmentation(cfg.augment, cfg.seed):
        x = layer(x)  # active only while training
    x = preprocessing_layer()(x)
    x = base(x, training=False)
    outputs = head(x)
    return keras.Model(inputs, outputs, name="finetuned")


def train_finetune(manifest: Path, dense_model: Path, out_dir: Path, backbone: BackboneConfig,
                   cfg: FinetuneConfig) -> dict:
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    keras.utils.set_random_seed(cfg.seed)
    head = keras.models.load_model(dense_model)
    model = build_finetune_model(head, backbone, cfg)
    model.compile(optimizer=keras.optimizers.RMSprop(cfg.learning_rate), loss=loss_for(len(classes)),
                  metrics=["accuracy"])

    def data(split: str, shuffle: bool):
        part = split_rows(rows, split)
        labels = [classes.index(r.label) for r in part]
        return image_dataset([r.path for r in part], labels, backbone.image_size, cfg.batch_size,
                             shuffle_seed=cfg.seed if shuffle else None)

    train, val = data("train", True), data("validation", False)
    log.info("fine-tuning on %d train / %d validation images", len(split_rows(rows, "train")),
             len(split_rows(rows, "validation")))
    start = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=cfg.epochs,
                        callbacks=[best_epoch_callback(cfg.patience)],
                        shuffle=False, verbose=2)  # the dataset reshuffles itself each epoch
    seconds = time.perf_counter() - start
    summary = save_training(model, history, out_dir, classes, {
        "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / len(history.history["loss"]), 1)})
    log.info("fine-tuned model: best epoch %d (val_loss %.4f, val_accuracy %.4f); saved to %s",
             summary["best_epoch"], summary["val_loss"], summary["val_accuracy"], out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--dense-model", type=Path, required=True, help="model.keras from train_dense")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params)
    train_finetune(args.manifest, args.dense_model, args.out, cfg.backbone, cfg.finetune)


if __name__ == "__main__":
    main()
