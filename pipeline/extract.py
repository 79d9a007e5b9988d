"""Stage 3: run the frozen conv base once over every split and cache the features on disk.

Features are streamed into .npy files batch by batch (memory stays bounded whatever the dataset size),
stored as float16 (MobileNet's ReLU6 outputs lie in [0, 6]: half precision loses nothing that matters),
next to meta.json saying exactly what produced them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline.backbone import PREPROCESSING, conv_base, describe_devices, image_dataset, preprocess
from pipeline.config import BackboneConfig, ExtractConfig, load_config
from pipeline.io import atomic_path, log, setup_logging, sha256_file, write_json
from pipeline.manifest import SPLITS, classes_of, read_manifest, split_rows

FEATURE_DTYPE = np.float16


def extract(manifest: Path, out_dir: Path, backbone: BackboneConfig, cfg: ExtractConfig) -> Path:
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    log.info("extracting %s features for %d images on %s", backbone.name, len(rows), describe_devices())
    base = conv_base(backbone)
    features = tf.function(lambda x: base(preprocess(x), training=False))
    shape = tuple(int(d) for d in base.output.shape[1:])
    counts, speed = {}, {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            part = split_rows(rows, split)
            counts[split] = len(part)
            labels = np.array([classes.index(r.label) for r in part], dtype=np.int32)
            np.save(tmp / f"{split}.labels.npy", labels)
            out = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=FEATURE_DTYPE,
                                            shape=(len(part), *shape))
            ds = image_dataset([r.path for r in part], None, backbone.image_size, cfg.batch_size)
            start, i = time.perf_counter(), 0
            with tqdm(total=len(part), unit="img", desc=f"extract {split}") as bar:
                for batch in ds:
                    feats = features(batch).numpy()
                    out[i:i + len(feats)] = feats
                    i += len(feats)
                    bar.update(len(feats))
            out.flush()
            del out
            speed[split] = round(len(part) / max(time.perf_counter() - start, 1e-9), 1)
        meta = {
            "backbone": backbone.model_dump(), "preprocessing": PREPROCESSING, "feature_shape": list(shape),
            "dtype": np.dtype(FEATURE_DTYPE).name, "classes": classes, "counts": counts,
            "images_per_second": speed, "manifest_sha256": sha256_file(manifest),
        }
        write_json(tmp / "meta.json", meta)
    log.info("wrote features %s for %s to %s (%s img/s)", shape, counts, out_dir, speed)
    return out_dir


def load_features(feature_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features as float32, integer labels) of one split."""
    x = np.load(feature_dir / f"{split}.npy", mmap_mode="r").astype(np.float32)
    return x, np.load(feature_dir / f"{split}.labels.npy")


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
    main()
