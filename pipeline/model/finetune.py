"""Fine-tuning's fast path: with augmentation off the frozen layers see the same pixels every epoch, so they run
once over train and validation and the epochs train only the top blocks and head on those activations (the same
model and maths, epochs several times faster: benchmarks/README.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import FinetuneConfig
from pipeline.files import log, scratch_dir
from pipeline.model.backbone import BASE_NAME, split_at_trainable
from pipeline.model.features import FEATURE_DTYPE, feature_function, stream_features
from pipeline.model.inputs import array_dataset
from pipeline.model.training import compile_for

Split = tuple[list[str], np.ndarray]  # image paths, integer labels


def frozen_activations(
    bottom: keras.Model,
    strategy: tf.distribute.Strategy,
    splits: list[list[str]],
    size: int,
    batch_size: int,
    scratch: Path,
) -> list[np.ndarray]:
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


def fit_cached(
    model: keras.Model,
    head: keras.Model,
    strategy: tf.distribute.Strategy,
    train: Split,
    val: Split,
    size: int,
    cfg: FinetuneConfig,
    n_classes: int,
    out_dir: Path,
    **fit,
) -> keras.callbacks.History | None:
    """Train on the frozen layers' activations, computed once; None when they would not fit in memory."""
    bottom, top = split_at_trainable(model.get_layer(BASE_NAME), cfg.unfreeze_blocks)
    if not _cache_fits(len(train[0]) + len(val[0]), bottom):
        return None
    start = time.perf_counter()
    x_train, x_val = frozen_activations(
        bottom, strategy, [train[0], val[0]], size, cfg.batch_size, out_dir / "frozen_activations"
    )
    log.info("frozen layers' activations %s cached in %.1f s", x_train.shape[1:], time.perf_counter() - start)
    with strategy.scope():
        inputs = keras.Input(top.input.shape[1:], name="frozen_activations")
        trainer = compile_for(keras.Model(inputs, head(top(inputs, training=False))), cfg.learning_rate, n_classes)
    return trainer.fit(
        array_dataset(x_train, train[1], cfg.batch_size, shuffle_seed=cfg.seed),
        validation_data=array_dataset(x_val, val[1], cfg.batch_size),
        shuffle=False,
        **fit,
    )
