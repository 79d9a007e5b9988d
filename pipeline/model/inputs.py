"""The image input pipeline every model sees (extract, fine-tune, evaluate, predict, Grad-CAM): decode, resize,
optionally mirror, batch; and the same batching for in-memory arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf


def decode(data: tf.Tensor | bytes) -> tf.Tensor:
    """The one decoder of every model input: file bytes -> uint8 RGB (height, width, 3)."""
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def load_image(path: tf.Tensor, size: int) -> tf.Tensor:
    image = decode(tf.io.read_file(path))
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (size, size))  # float32 in [0, 255]


def decode_error(path: str | Path) -> str | None:
    """Why `decode` rejects the file (TensorFlow's message without its op prefix), or None when it reads it.
    Prepare checks every file it keeps with this, so training never meets a file TensorFlow can't decode."""
    try:
        decode(Path(path).read_bytes())
    except tf.errors.InvalidArgumentError as err:
        return str(err.message).split("}}")[-1].replace("[Op:DecodeImage]", "").strip()
    return None


def first_undecodable(paths: list[str]) -> tuple[str, str] | None:
    """(path, reason) of the first file `decode` rejects: names the file when a batch fails to decode."""
    for path in paths:
        if (reason := decode_error(path)) is not None:
            return path, reason
    return None


def image_dataset(
    paths: list[str],
    labels: list[int] | np.ndarray | None,
    size: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    flip: bool = False,
) -> tf.data.Dataset:
    """Parallel decode + resize (+ horizontal flip), batched and prefetched; yields (images, labels) or images.

    Fixed parallelism (every core) and two batches of prefetch, tf.data's autotuner off: decoding runs ~20x
    faster than the conv base, so this never starves it, and the autotuner's thread made each finished
    iterator wait, seconds at a time, before it could be freed (every split, every epoch: benchmarks/README.md).
    """
    cores = len(os.sched_getaffinity(0))
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))  # typed: an empty split stays valid
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    if labels is not None:
        ds = ds.map(lambda p, y: (load_image(p, size), y), num_parallel_calls=cores)
    else:
        ds = ds.map(lambda p: load_image(p, size), num_parallel_calls=cores)
    if flip:
        ds = ds.map(
            lambda x, *y: (tf.reverse(x, axis=[1]), *y) if y else tf.reverse(x, axis=[1]), num_parallel_calls=cores
        )
    return without_autotune(ds.batch(batch_size).prefetch(2))


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuner off (why: image_dataset)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def array_batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(x, y) batches from in-memory arrays, reshuffled each epoch when seeded; what Keras makes of arrays, but
    without the autotuner (see image_dataset)."""
    xs, ys = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    idx = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        idx = idx.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return without_autotune(idx.batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i))).prefetch(2))
