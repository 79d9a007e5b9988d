"""The pretrained conv base and the image input pipeline, shared by extract, fine-tune, evaluate and predict."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.config import BackboneConfig  # noqa: E402

# MobileNet v1 has 13 depthwise-separable blocks named conv_dw_N / conv_pw_N (+ _bn, _relu, conv_pad_N).
N_BLOCKS = 13
BASE_NAME = "conv_base"  # fixed layer name, so models can be inspected whatever the size and alpha
PREPROCESSING = "mobilenet: x / 127.5 - 1 on RGB resized (bilinear, no crop) to image_size"


def conv_base(cfg: BackboneConfig) -> keras.Model:
    """ImageNet MobileNet without its classifier; offline, KERAS_HOME must hold the weights file."""
    size = cfg.image_size
    try:
        return keras.applications.MobileNet(
            input_shape=(size, size, 3), alpha=cfg.alpha, include_top=False, weights=cfg.weights,
            name=BASE_NAME,
        )
    except Exception as err:  # keras raises a bare Exception when the weights URL can't be fetched
        if cfg.weights and "URL fetch failure" in str(err):
            raise RuntimeError(
                f"could not load ImageNet weights for MobileNet alpha={cfg.alpha} size={size}: {err}\n"
                "Offline? Copy a keras_home with models/mobilenet_*_tf_no_top.h5 (e.g. ../shared/keras_home) "
                "to a writable folder and set KERAS_HOME to it."
            ) from None
        raise


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """RGB floats in [0, 255] -> the [-1, 1] range MobileNet was trained on."""
    return images / 127.5 - 1.0


def preprocessing_layer() -> keras.layers.Layer:
    """The same scaling as `preprocess`, as a layer so saved models take raw pixels."""
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="mobilenet_preprocess")


def load_image(path: tf.Tensor, size: int) -> tf.Tensor:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (size, size))  # float32 in [0, 255]


def image_dataset(paths: list[str], labels: list[int] | None, size: int, batch_size: int,
                  shuffle_seed: int | None = None, flip: bool = False) -> tf.data.Dataset:
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
        ds = ds.map(lambda x, *y: (tf.reverse(x, axis=[1]), *y) if y else tf.reverse(x, axis=[1]),
                    num_parallel_calls=cores)
    return without_autotune(ds.batch(batch_size).prefetch(2))


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuner off (why: image_dataset)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def array_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(x, y) batches from in-memory arrays, reshuffled each epoch when seeded; what Keras makes of arrays, but
    without the autotuner (see image_dataset)."""
    xs, ys = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    idx = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        idx = idx.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return without_autotune(idx.batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i))).prefetch(2))


def unfreeze_top_blocks(base: keras.Model, n_blocks: int) -> list[str]:
    """Make the last `n_blocks` conv blocks trainable; BatchNorm stays frozen. Returns the trainable layers."""
    first = N_BLOCKS - n_blocks + 1
    top = {f"conv_dw_{i}" for i in range(first, N_BLOCKS + 1)} | {f"conv_pw_{i}" for i in range(first, N_BLOCKS + 1)}
    base.trainable = True
    names = []
    for layer in base.layers:
        layer.trainable = layer.name in top  # conv_dw_N / conv_pw_N hold the weights; _bn layers stay frozen
        if layer.trainable:
            names.append(layer.name)
    return names


def split_at_trainable(base: keras.Model, n_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(frozen bottom, top made of the `n_blocks` top blocks), sharing `base`'s layers and weights."""
    if n_blocks == 0:  # nothing trainable in the base: all of it is the bottom
        features = keras.Input(base.output.shape[1:])
        return base, keras.Model(features, features)
    first = N_BLOCKS - n_blocks + 1
    boundary = base.get_layer("conv1_relu" if first == 1 else f"conv_pw_{first - 1}_relu").output
    return keras.Model(base.input, boundary, name="frozen_bottom"), keras.Model(boundary, base.output, name="top")


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
