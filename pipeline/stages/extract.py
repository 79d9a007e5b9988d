"""Stage 3: run the frozen conv base once over every split and cache the features on disk.

Writes <split>.npy (float16) and <split>.labels.npy per split, <split>.mirror.npy for train and test (their
mirrored images, from the same decoded batches: the dense head's flip augmentation and test-time augmentation),
and meta.json saying exactly what produced them.
Devices: the GPU when TensorFlow sees one, with XLA; several GPUs share each batch (extract.multi_gpu).
Speed and memory: benchmarks/README.md; the measured img/s go to the execution record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cli import execution_record, output, parser, run_cli, setup_logging
from pipeline.config import BackboneConfig, ExtractConfig, load_config
from pipeline.contracts import FeatureMeta
from pipeline.data.manifest import classes_of, read_manifest, split_rows
from pipeline.files import JSON, atomic_path, folder_of, log, sha256_file
from pipeline.layout import FEATURE_META_FILE, SPLITS
from pipeline.model.backbone import PREPROCESSING, conv_base
from pipeline.model.devices import describe_devices, distribution
from pipeline.model.features import (
    FEATURE_DTYPE,
    MIRRORED_SPLITS,
    feature_file,
    feature_function,
    labels_file,
    stream_features,
)

OUTPUT = folder_of("extract")  # replaced whole: only a folder this stage wrote (or an empty one)


def extract(manifest: Path, out_dir: Path, backbone: BackboneConfig, cfg: ExtractConfig) -> dict[str, float]:
    """Write the feature folder; return the images per second of each split."""
    rows = read_manifest(manifest)
    classes = classes_of(rows)
    strategy = distribution(cfg.multi_gpu)
    log.info(
        "extracting %s features for %d images on %s (%d replica(s))",
        backbone.name,
        len(rows),
        describe_devices(),
        strategy.num_replicas_in_sync,
    )
    with strategy.scope():
        base = conv_base(backbone)
    shape = tuple(int(d) for d in base.output.shape[1:])
    run = {m: feature_function(base, strategy, mirrored=m) for m in (False, True)}
    counts, speed = {}, {}
    with atomic_path(out_dir, OUTPUT) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            part = split_rows(rows, split)
            counts[split] = len(part)
            np.save(tmp / labels_file(split), np.array([classes.index(r.label) for r in part], dtype=np.int32))
            mirror = split in MIRRORED_SPLITS
            outs = [tmp / feature_file(split)] + ([tmp / feature_file(split, mirror=True)] if mirror else [])
            speed[split] = stream_features(
                run[mirror],
                strategy,
                [r.path for r in part],
                outs,
                shape,
                backbone.image_size,
                cfg.batch_size,
                f"extract {split}" + (" (+ mirrored)" if mirror else ""),
            )
        FeatureMeta(
            backbone=backbone,
            preprocessing=PREPROCESSING,
            feature_shape=shape,
            dtype=np.dtype(FEATURE_DTYPE).name,
            classes=classes,
            counts=counts,
            manifest_sha256=sha256_file(manifest),
        ).save(tmp / FEATURE_META_FILE)
    log.info("wrote features %s for %s to %s (%s img/s)", shape, counts, out_dir, speed)
    return speed


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=output(OUTPUT), required=True, help="feature folder")
    ap.add_argument("--execution", type=output(JSON), required=True, help="JSON: img/s per split, devices, seconds")
    args = ap.parse_args(argv)
    setup_logging()
    cfg = load_config(args.params, args.dataset)
    with execution_record(args.execution) as facts:
        facts["images_per_second"] = extract(args.manifest, args.out, cfg.backbone, cfg.extract)
        facts["devices"] = describe_devices()


if __name__ == "__main__":
    run_cli(main)
