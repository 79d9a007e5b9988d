"""Where the models run: the GPU(s) TensorFlow sees, else the CPU; whether XLA pays off there."""

from __future__ import annotations

import tensorflow as tf


def describe_devices() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    return f"{len(gpus)} GPU(s): {[g.name for g in gpus]}" if gpus else "CPU only (no GPU visible)"


def distribution(multi_gpu: bool) -> tf.distribute.Strategy:
    """MirroredStrategy over every visible GPU when there are several and `multi_gpu` is on; else the default
    strategy, under which TensorFlow places the model on the one GPU if there is one, the CPU otherwise."""
    if multi_gpu and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def use_xla() -> bool:
    """XLA where it pays: with a GPU visible (as Keras's jit_compile="auto" decides); on this project's CPU it made
    MobileNet ~10x slower (benchmarks/README.md)."""
    return bool(tf.config.list_physical_devices("GPU"))
