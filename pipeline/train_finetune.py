"""Stage 5: MobileNet + the trained dense head, top conv blocks unfrozen, low learning rate, augmentation.

BatchNorm layers stay in inference mode (the base is called with training=False) so their ImageNet
statistics are not wrecked by small batches. The saved model takes raw RGB pixels in [0, 255].

Speed: with augmentation off (finetune.augment all off) the frozen layers see the same pixels every epoch, so
they run once over train and validation and the epochs train the top blocks and head on those activations
(the same model and maths, epochs several times faster: benchmarks/README.md). With several GPUs visible, the
model trains on all of them (finetune.multi_gpu), each batch split across them.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.backbone import (BASE_NAME, array_dataset, conv_base, distribution, image_dataset,
                               preprocessing_layer, split_at_trainable, unfreeze_top_blocks)
from pipeline.config import AugmentConfig, BackboneConfig, FinetuneConfig, load_config
from pipeline.extract import FEATURE_DTYPE, feature_function, stream_features
from pipeline.heads import best_epoch_callback, class_weights, loss_for, save_training
from pipeline.io import log, run_cli, scratch_dir, setup_logging
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


def augments(cfg: AugmentConfig) -> bool:
    return bool(cfg.flip or cfg.rotation or cfg.zoom)


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


def compiled(model: keras.Model, cfg: FinetuneConfig, n_classes: int) -> keras.Model:
    model.compile(optimizer=keras.optimizers.RMSprop(cfg.learning_rate), loss=loss_for(n_classes),
                  metrics=["accuracy"])
    return model


def frozen_activations(bottom: keras.Model, strategy: tf.distribute.Strategy, splits: list[list[str]], size: int,
                       batch_size: int, scratch: Path) -> list[np.ndarray]:
    """The frozen bottom's output for every image of each list of paths, in order (streamed via `scratch`)."""
    run = feature_function(bottom, strategy, mirrored=False)
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    outs = []
    with scratch_dir(scratch) as tmp:
        for i, paths in enumerate(splits):
            stream_features(run, strategy, paths, [tmp / f"{i}.npy"], shape, size, batch_size, "frozen layers")
            outs.append(np.load(tmp / f"{i}.npy"))
    return outs


def _cache_fits(n_images: int, bottom: keras.Model) -> bool:
    """Cache only what takes under half the free memory; otherwise the images are read every epoch."""
    need = n_images * int(np.prod(bottom.output.shape[1:])) * np.dtype(FEATURE_DTYPE).itemsize
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    log.info("frozen activations of %d images: %.0f MB (free memory %.0f MB)", n_images, need / 2**20, free / 2**20)
    return need < free / 2


Split = tuple[list[str], np.ndarray]  # image paths, integer labels


def _fit_cached(model: keras.Model, head: keras.Model, strategy: tf.distribute.Strategy, train: Split, val: Split,
                size: int, cfg: FinetuneConfig, n_classes: int, out_dir: Path, **fit) -> keras.callbacks.History | None:
    """Train on the frozen layers' activations, computed once; None when they would not fit in memory."""
    bottom, top = split_at_trainable(model.get_layer(BASE_NAME), cfg.unfreeze_blocks)
    if not _cache_fits(len(train[0]) + len(val[0]), bottom):
        return None
    start = time.perf_counter()
    x_train, x_val = frozen_activations(bottom, strategy, [train[0], val[0]], size, cfg.batch_size,
                                        out_dir / "frozen_activations")
    log.info("frozen layers' activations %s cached in %.1f s", x_train.shape[1:], time.perf_counter() - start)
    with strategy.scope():
        inputs = keras.Input(top.input.shape[1:], name="frozen_activations")
        trainer = compiled(keras.Model(inputs, head(top(inputs, training=False))), cfg, n_classes)  # same weights
    return trainer.fit(array_dataset(x_train, train[1], cfg.batch_size, shuffle_seed=cfg.seed),
                       validation_data=array_dataset(x_val, val[1], cfg.batch_size), shuffle=False, **fit)


def train_finetune(manifest: Path, dense_model: Path, out_dir: Path, backbone: BackboneConfig,
                   cfg: FinetuneConfig) -> dict:
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    keras.utils.set_random_seed(cfg.seed)
    strategy = distribution(cfg.multi_gpu)
    with strategy.scope():
        head = keras.models.load_model(dense_model, compile=False)  # its optimizer state would bloat the model
        model = compiled(build_finetune_model(head, backbone, cfg), cfg, len(classes))

    def split(name: str) -> Split:
        part = split_rows(rows, name)
        return [r.path for r in part], np.array([classes.index(r.label) for r in part])

    train, val = split("train"), split("validation")
    weights = class_weights(train[1], len(classes), cfg.class_weight)
    log.info("fine-tuning on %d train / %d validation images (class weights %s, %d replica(s))", len(train[0]),
             len(val[0]), weights, strategy.num_replicas_in_sync)
    fit = dict(epochs=cfg.epochs, callbacks=[best_epoch_callback(cfg.patience)], class_weight=weights, verbose=2)
    start = time.perf_counter()
    history = None
    if not augments(cfg.augment):
        history = _fit_cached(model, head, strategy, train, val, backbone.image_size, cfg, len(classes), out_dir,
                              **fit)
    if history is None:
        size, batch = backbone.image_size, cfg.batch_size
        history = model.fit(image_dataset(train[0], train[1].tolist(), size, batch, shuffle_seed=cfg.seed),
                            validation_data=image_dataset(val[0], val[1].tolist(), size, batch),
                            shuffle=False, **fit)  # the dataset reshuffles itself each epoch
    seconds = time.perf_counter() - start
    summary = save_training(model, history, out_dir, classes, {
        "train_seconds": round(seconds, 1), "seconds_per_epoch": round(seconds / len(history.history["loss"]), 1),
        "class_weight": weights and {classes[c]: w for c, w in weights.items()}})
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
    run_cli(main)
