"""Stage 3: run the frozen conv base once over every split and cache the features on disk.

tf.data decodes and resizes in parallel threads while the compiled (tf.function) conv base runs the previous
batch; each batch's features are appended to an .npy file as they come (memory stays flat whatever the
dataset size; no memmap, whose written pages would count in the process's memory). Stored as float16
(MobileNet's ReLU6 outputs lie in [0, 6]: half precision loses nothing that matters), next to meta.json
saying exactly what produced them. The test split's mirrored images reuse its decoded batches.
Devices: the GPU when TensorFlow sees one, with XLA; several GPUs share each batch (extract.multi_gpu).
Speed and memory: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import BinaryIO, Callable

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline.backbone import (PREPROCESSING, conv_base, describe_devices, distribution, image_dataset,
                               preprocess, use_xla)
from pipeline.config import BackboneConfig, ExtractConfig, load_config
from pipeline.io import atomic_path, log, run_cli, setup_logging, sha256_file, write_json
from pipeline.manifest import SPLITS, classes_of, read_manifest, split_rows

FEATURE_DTYPE = np.float16
MIRRORED = "test.mirror"  # features of the horizontally mirrored test images, for test-time augmentation

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

    def features(batch) -> tuple[np.ndarray, ...]:
        # each replica's part, in replica order (= batch order); no cross-device gather needed on the host
        return tuple(np.concatenate([part.numpy().astype(FEATURE_DTYPE)
                                     for part in strategy.experimental_local_results(out)]) for out in run(batch))

    return features


def _npy_writer(path: Path, n: int, shape: tuple[int, ...]) -> BinaryIO:
    """An .npy file of n rows whose data the caller appends row-major, batch by batch."""
    f = open(path, "wb")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(FEATURE_DTYPE)), "fortran_order": False,
              "shape": (n, *shape)}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def stream_features(features: Features, strategy: tf.distribute.Strategy, paths: list[str], outs: list[Path],
                    shape: tuple[int, ...], size: int, batch_size: int, desc: str) -> float:
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
    finally:
        for f in files:
            f.close()
    if done != len(paths):  # the header promised len(paths) rows
        raise RuntimeError(f"{desc}: got features for {done} of {len(paths)} images")
    return round(len(paths) / max(time.perf_counter() - start, 1e-9), 1)


def extract(manifest: Path, out_dir: Path, backbone: BackboneConfig, cfg: ExtractConfig) -> Path:
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    strategy = distribution(cfg.multi_gpu)
    log.info("extracting %s features for %d images on %s (%d replica(s))", backbone.name, len(rows),
             describe_devices(), strategy.num_replicas_in_sync)
    with strategy.scope():
        base = conv_base(backbone)
    shape = tuple(int(d) for d in base.output.shape[1:])
    plain, both = (feature_function(base, strategy, mirrored) for mirrored in (False, True))
    counts, speed = {}, {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            part = split_rows(rows, split)
            counts[split] = len(part)
            np.save(tmp / f"{split}.labels.npy", np.array([classes.index(r.label) for r in part], dtype=np.int32))
            mirrored = split == "test"  # its mirrored images too, from the same decoded batches
            outs = [tmp / f"{split}.npy"] + ([tmp / f"{MIRRORED}.npy"] if mirrored else [])
            speed[split] = stream_features(both if mirrored else plain, strategy, [r.path for r in part], outs,
                                           shape, backbone.image_size, cfg.batch_size,
                                           f"extract {split}" + (" (+ mirrored)" if mirrored else ""))
        meta = {
            "backbone": backbone.model_dump(), "preprocessing": PREPROCESSING, "feature_shape": list(shape),
            "dtype": np.dtype(FEATURE_DTYPE).name, "classes": classes, "counts": counts,
            "images_per_second": speed, "manifest_sha256": sha256_file(manifest),
        }
        write_json(tmp / "meta.json", meta)
    log.info("wrote features %s for %s to %s (%s img/s)", shape, counts, out_dir, speed)
    return out_dir


def load_features(feature_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features as float32, integer labels) of one split; split MIRRORED gives the mirrored test images."""
    x = np.load(feature_dir / f"{split}.npy", mmap_mode="r").astype(np.float32)
    return x, np.load(feature_dir / f"{split.split('.')[0]}.labels.npy")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="feature folder")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params)
    extract(args.manifest, args.out, cfg.backbone, cfg.extract)


if __name__ == "__main__":
    run_cli(main)
