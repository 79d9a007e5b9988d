"""Conv-base features of image files, streamed batch by batch into .npy files, and reading them back.

tf.data decodes and resizes in parallel threads while the compiled (tf.function) conv base runs the previous
batch; each batch's features are appended to an .npy file as they come (memory stays flat whatever the
dataset size; no memmap, whose written pages would count in the process's memory). Stored as float16
(MobileNet's ReLU6 outputs lie in [0, 6]: half precision loses nothing that matters).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline.model.backbone import preprocess
from pipeline.model.devices import use_xla
from pipeline.model.inputs import first_undecodable, image_dataset

FEATURE_DTYPE = np.float16


MIRRORED_SPLITS = ("train", "test")  # train: the dense head's flip augmentation; test: test-time augmentation


def feature_file(split: str, mirror: bool = False) -> str:
    """The file of `split`'s features in a feature folder, or (`mirror`) of its horizontally mirrored images'."""
    return f"{split}.mirror.npy" if mirror else f"{split}.npy"


def labels_file(split: str) -> str:
    return f"{split}.labels.npy"


Features = Callable[..., tuple[np.ndarray, ...]]  # (per-replica) image batch -> feature arrays


def feature_function(base: keras.Model, strategy: tf.distribute.Strategy, mirrored: bool) -> Features:
    """Batch of RGB images in [0, 255] -> (features,) or (features, features of the mirrored images), as float16
    arrays in batch order; each replica (GPU) runs its share of the batch."""

    def replica(images: tf.Tensor) -> tuple[tf.Tensor, ...]:
        x = preprocess(images)
        views = (x, tf.reverse(x, axis=[2])) if mirrored else (x,)
        return tuple(base(v, training=False) for v in views)

    if use_xla():  # compiled per replica: tf.distribute's way of running XLA on each GPU
        replica = tf.function(replica, jit_compile=True, autograph=False)
    run = tf.function(lambda batch: strategy.run(replica, args=(batch,)), reduce_retracing=True, autograph=False)

    def features(batch: tf.Tensor | tf.types.experimental.distributed.PerReplica) -> tuple[np.ndarray, ...]:
        # each replica's part, in replica order (= batch order); no cross-device gather needed on the host
        return tuple(
            np.concatenate([part.numpy().astype(FEATURE_DTYPE) for part in strategy.experimental_local_results(out)])
            for out in run(batch)
        )

    return features


def _npy_writer(path: Path, n: int, shape: tuple[int, ...]) -> BinaryIO:
    """An .npy file of n rows whose data the caller appends row-major, batch by batch."""
    f = open(path, "wb")  # noqa: SIM115 - closed by stream_features once every batch is written
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(FEATURE_DTYPE)),
        "fortran_order": False,
        "shape": (n, *shape),
    }
    np.lib.format.write_array_header_1_0(f, header)
    return f


def stream_features(
    features: Features,
    strategy: tf.distribute.Strategy,
    paths: list[str],
    outs: list[Path],
    shape: tuple[int, ...],
    size: int,
    batch_size: int,
    desc: str,
) -> float:
    """Write `features` of `paths` (one output per element of its result) into `outs`; return images per second."""
    ds = strategy.experimental_distribute_dataset(image_dataset(paths, None, size, batch_size))
    files = [_npy_writer(out, len(paths), shape) for out in outs]
    start, done = time.perf_counter(), 0
    try:
        with tqdm(total=len(paths), unit="img", desc=desc) as bar:
            for batch in ds:
                for f, feats in zip(files, features(batch)):
                    f.write(feats.tobytes())
                done += len(feats)
                bar.update(len(feats))
    except tf.errors.InvalidArgumentError as err:  # TensorFlow's message names no file: find it (batches keep order)
        bad = first_undecodable(paths[done : done + batch_size])
        if bad is None:
            raise
        raise RuntimeError(f"{desc}: TensorFlow cannot decode {bad[0]}: {bad[1]} (re-run prepare)") from err
    finally:
        for f in files:
            f.close()
    if done != len(paths):  # the header promised len(paths) rows
        raise RuntimeError(f"{desc}: got features for {done} of {len(paths)} images")
    return round(len(paths) / max(time.perf_counter() - start, 1e-9), 1)


def load_features(feature_dir: Path, split: str, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(features as float32, integer labels) of one split, or (`mirror`) of its mirrored images."""
    x = np.load(feature_dir / feature_file(split, mirror), mmap_mode="r").astype(np.float32)
    return x, np.load(feature_dir / labels_file(split))


def load_train_features(feature_dir: Path, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """The train split's features and labels, followed (`flip`) by its mirrored images': the float32 array is
    filled from the float16 files in place, so no second copy of it is ever held."""
    plain = np.load(feature_dir / feature_file("train"), mmap_mode="r")
    labels = np.load(feature_dir / labels_file("train"))
    if not flip:
        return plain.astype(np.float32), labels
    mirror = np.load(feature_dir / feature_file("train", mirror=True), mmap_mode="r")
    x = np.empty((2 * len(plain), *plain.shape[1:]), dtype=np.float32)
    x[: len(plain)], x[len(plain) :] = plain, mirror
    return x, np.tile(labels, 2)


def feature_probabilities(
    predict: Callable[[np.ndarray], np.ndarray], feature_dir: Path, split: str, tta_flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities by `predict`, labels) of a split's cached features; with `tta_flip` (evaluate.tta_flip) the
    mean with those of its mirrored images' features (cached for the test split: no image is decoded)."""
    x, y = load_features(feature_dir, split)
    probs = predict(x)
    if tta_flip:
        probs = (probs + predict(load_features(feature_dir, split, mirror=True)[0])) / 2
    return probs, y
