"""Why pipeline.model.inputs.image_dataset turns tf.data's autotuner off: with it on, freeing a finished iterator
(end of every split, every epoch) sometimes waited seconds, idle, for the autotuner's thread.

Iterates the project's image_dataset over real JPEGs with the conv base consuming each batch, several times
with the autotuner switched back on (as before) and off (as now), and times the loop and the iterator's release.
Usage: python benchmarks/iterators.py [--images 1000] [--runs 6]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from common import load, machine, real_images, with_autotuner

import tensorflow as tf  # noqa: E402  (after common: environment first)

from pipeline.config import load_config  # noqa: E402
from pipeline.model.backbone import conv_base  # noqa: E402
from pipeline.model.features import feature_function  # noqa: E402
from pipeline.model.inputs import image_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    print(machine(), flush=True)
    backbone = load_config().backbone
    features = feature_function(conv_base(backbone), tf.distribute.get_strategy(), mirrored=False)
    with tempfile.TemporaryDirectory(prefix="bench-iterators-") as tmp:
        paths = [str(p) for p in real_images(Path(tmp), args.images)]
        kinds = {
            "autotuner on (before)": lambda: with_autotuner(image_dataset(paths, None, backbone.image_size, 32)),
            "autotuner off (now)": lambda: image_dataset(paths, None, backbone.image_size, 32),
        }
        for run in range(args.runs):
            for name, make in kinds.items():  # alternating, so that load changes hit both alike
                start = time.perf_counter()
                it = iter(make())
                for batch in it:
                    features(batch)
                looped = time.perf_counter()
                del it
                gc.collect()
                freed = time.perf_counter()
                print(
                    f"run {run + 1} {name:22s} loop {looped - start:5.1f} s, iterator freed in "
                    f"{freed - looped:4.1f} s -> {args.images / (freed - start):5.1f} img/s  ({load()})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
