"""What fine-tuning fits (fit_inputs), and its fast path: when augmentation is at most a horizontal flip, the
frozen layers' output for each image and for its mirror image never changes, so they run once over train (both
views) and validation, and the epochs train only the top blocks and head on those activations, each epoch picking
one view per image at random: the same model and the same flip augmentation, epochs several times faster
(benchmarks/README.md). Otherwise (or short of memory) the whole model trains on the images."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import FinetuneConfig
from pipeline.files import log, scratch_dir
from pipeline.model.backbone import split_at_trainable
from pipeline.model.features import FEATURE_DTYPE, feature_function, stream_features
from pipeline.model.inputs import array_batches, image_dataset, load_image, without_autotune
from pipeline.model.parts import finetune_parts
from pipeline.model.training import compile_for, targets

ImageSplit = tuple[list[str], np.ndarray]  # image paths, integer labels


def cacheable(cfg: FinetuneConfig) -> bool:
    """Rotation, zoom and colour change the pixels every epoch: only flip (or nothing) can be precomputed."""
    return not (cfg.augment.rotation or cfg.augment.zoom or cfg.augment.color)


def frozen_activations(
    bottom: keras.Model,
    strategy: tf.distribute.Strategy,
    paths: list[str],
    mirrored: bool,
    size: int,
    batch_size: int,
    scratch: Path,
) -> list[np.ndarray]:
    """The frozen bottom's output for every image of `paths`, in order, and (`mirrored`) for its mirror image,
    from the same decoded batches (streamed via `scratch`)."""
    run = feature_function(bottom, strategy, mirrored=mirrored)
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    with scratch_dir(scratch) as tmp:
        outs = [tmp / "plain.npy"] + ([tmp / "mirror.npy"] if mirrored else [])
        stream_features(run, strategy, paths, outs, shape, size, batch_size, "frozen layers")
        return [np.load(out) for out in outs]


def _cache_fits(n_images: int, bottom: keras.Model) -> bool:
    """Cache only what takes under half the free memory; otherwise the images are read every epoch."""
    need = n_images * int(np.prod(bottom.output.shape[1:])) * np.dtype(FEATURE_DTYPE).itemsize
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    log.info("frozen activations of %d images: %.0f MB (free memory %.0f MB)", n_images, need / 2**20, free / 2**20)
    return need < free / 2


def epoch_batches(
    n: int, seed: int, epochs: range, batches: Callable[[tf.data.Dataset], tf.data.Dataset]
) -> tf.data.Dataset:
    """The training batches of `epochs` (0-based) in turn: each epoch, `batches` turns every (index, coin) of
    range(n) into batches, in an order and with coin flips that are stateless functions of (seed, epoch). So a
    run resumed at epoch k sees exactly the batches an uninterrupted run sees there, with no iterator to save."""

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([seed, e]))
        coins = tf.random.stateless_uniform([n], seed=tf.stack([seed + 1, e])) < 0.5
        return batches(tf.data.Dataset.from_tensor_slices((order, coins)))

    ranged = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(epoch)
    return without_autotune(ranged.prefetch(2))


def flip_dataset(
    x: np.ndarray, mirror: np.ndarray | None, y: np.ndarray, batch_size: int, seed: int, epochs: range
) -> tf.data.Dataset:
    """(x, y) batches of `epochs`, each element the plain or (given `mirror`) the mirrored view with even odds."""
    xs, ys = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    ms = xs if mirror is None else tf.convert_to_tensor(mirror)

    def gather(i: tf.Tensor, flip: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        flip = tf.reshape(flip, [-1] + [1] * (len(x.shape) - 1))
        return tf.where(flip, tf.gather(ms, i), tf.gather(xs, i)), tf.gather(ys, i)

    return epoch_batches(len(x), seed, epochs, lambda ds: ds.batch(batch_size).map(gather))


def image_batches(
    paths: list[str], y: np.ndarray, size: int, batch_size: int, seed: int, epochs: range
) -> tf.data.Dataset:
    """image_dataset's (images, labels) batches for training: decoded in parallel, in epoch_batches' order."""
    files, ys = tf.constant(paths, tf.string), tf.convert_to_tensor(y)
    cores = len(os.sched_getaffinity(0))

    def load(i: tf.Tensor, _: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return load_image(tf.gather(files, i), size), tf.gather(ys, i)

    return epoch_batches(len(paths), seed, epochs, lambda ds: ds.map(load, num_parallel_calls=cores).batch(batch_size))


@dataclass(frozen=True)
class FitInputs:
    """What fine-tuning's one fit trains on: `trainer` (the image model, or its top blocks and head on the frozen
    layers' cached activations, sharing their layers and weights), `batches(first)`: the training batches of the
    epochs from `first` (0-based) on, and the checkpoint `variant` they make (kept: existing checkpoints' keys)."""

    trainer: keras.Model
    batches: Callable[[int], tf.data.Dataset]
    validation: tf.data.Dataset
    steps_per_epoch: int
    variant: str  # "cached activations" or "images"


def fit_inputs(
    model: keras.Model,
    head: keras.Model,
    strategy: tf.distribute.Strategy,
    train: ImageSplit,
    val: ImageSplit,
    size: int,
    cfg: FinetuneConfig,
    n_classes: int,
    scratch: Path,
) -> FitInputs:
    """Compile `model` (the saved model carries its compile config whichever way it trains) and say what to fit:
    the frozen layers' activations, computed once (again on resume: the same, deterministically), when the
    augmentation allows it and they fit in memory; else the images, read every epoch."""
    steps = math.ceil(len(train[0]) / cfg.batch_size)
    with strategy.scope():
        compile_for(model, cfg, n_classes, steps)
    y_train, y_val = (targets(y, n_classes, cfg.label_smoothing) for y in (train[1], val[1]))
    frozen = _frozen_if_cached(model, cfg, len(train[0]) * (2 if cfg.augment.flip else 1) + len(val[0]))
    if frozen is None:
        return FitInputs(
            model,
            lambda first: image_batches(train[0], y_train, size, cfg.batch_size, cfg.seed, range(first, cfg.epochs)),
            image_dataset(val[0], y_val, size, cfg.batch_size),
            steps,
            "images",
        )
    bottom, top = frozen
    start, folder, flip = time.perf_counter(), scratch / "frozen_activations", cfg.augment.flip
    x_train = frozen_activations(bottom, strategy, train[0], flip, size, cfg.batch_size, folder)
    (x_val,) = frozen_activations(bottom, strategy, val[0], False, size, cfg.batch_size, folder)
    log.info("frozen layers' activations %s cached in %.1f s", x_val.shape[1:], time.perf_counter() - start)
    mirror = x_train[1] if flip else None
    return FitInputs(
        activations_trainer(top, head, strategy, cfg, n_classes, steps),
        lambda first: flip_dataset(x_train[0], mirror, y_train, cfg.batch_size, cfg.seed, range(first, cfg.epochs)),
        array_batches(x_val, y_val, cfg.batch_size),
        steps,
        "cached activations",
    )


def _frozen_if_cached(model: keras.Model, cfg: FinetuneConfig, n_images: int) -> tuple[keras.Model, keras.Model] | None:
    """`model`'s (frozen bottom, top) when the bottom's activations of `n_images` are to be cached; None, saying
    why, when the images are to be read every epoch instead."""
    if not cacheable(cfg):
        log.info("rotation, zoom or colour augmentation changes the pixels every epoch: fine-tuning on the images")
        return None
    bottom, top = split_frozen(model, cfg)
    if not _cache_fits(n_images, bottom):
        log.info("the frozen activations would take over half the free memory: fine-tuning on the images")
        return None
    return bottom, top


def split_frozen(model: keras.Model, cfg: FinetuneConfig) -> tuple[keras.Model, keras.Model]:
    """The fine-tuning model's base as (frozen bottom, the top blocks that train), sharing its layers."""
    return split_at_trainable(finetune_parts(model).base, cfg.unfreeze_blocks)


def activations_trainer(
    top: keras.Model, head: keras.Model, strategy: tf.distribute.Strategy, cfg: FinetuneConfig, n: int, steps: int
) -> keras.Model:
    """`top` then `head` on the frozen bottom's activations, compiled: training it trains their own weights."""
    with strategy.scope():
        inputs = keras.Input(top.input.shape[1:], name="frozen_activations")
        return compile_for(keras.Model(inputs, head(top(inputs, training=False))), cfg, n, steps)
