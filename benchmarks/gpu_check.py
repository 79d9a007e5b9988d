"""GPU check (issue #25): on the cats-vs-dogs archive, the pipeline's own extract and two fine-tune epochs, timed.
Prints the devices TensorFlow sees, the precision policy, extract's images/s and fine-tuning's s/epoch.

    bash benchmarks/gpu_check.sh          # installs TensorFlow's CUDA build into .venv-gpu first, then runs this
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import REPO, machine

import keras
import tensorflow as tf
from recipe_data import dataset

from pipeline.layout import MODEL_FILE
from pipeline.model.devices import describe_devices, use_xla
from pipeline.stages.extract import extract
from pipeline.stages.train_dense import train_dense
from pipeline.stages.train_finetune import train_finetune


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch (the cached activations, computed before the first, are not in it)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


class Timed:
    """Stands in for train_finetune's live MLflow run: it only hands fit a callback."""

    def __init__(self):
        self.times = EpochTimes()

    def callback(self, prefix: str = "") -> keras.callbacks.Callback:
        return self.times


def main() -> None:
    print(machine(), flush=True)
    print(f"devices: {describe_devices()}; XLA: {use_xla()}", flush=True)
    print(f"precision: {keras.mixed_precision.global_policy().name} (the pipeline sets no mixed-precision policy)")
    ds = dataset("cats_and_dogs_filtered")  # prepared (and extracted) once under .cache/bench
    n = sum(1 for _ in ds.layout.manifest.read_text().splitlines()[1:])
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=REPO / ".cache") as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        extract(ds.layout.manifest, out / "features", ds.cfg.backbone, ds.cfg.extract)
        seconds = time.perf_counter() - start
        print(f"extract: {n} images (+ mirrored train/test views) in {seconds:.1f} s = {n / seconds:.0f} img/s")
        train_dense(out / "features", out / "dense", ds.cfg.dense)
        cfg = ds.cfg.finetune.model_copy(update={"epochs": 2, "patience": 2})
        timed, start = Timed(), time.perf_counter()
        dense = out / "dense" / MODEL_FILE
        summary = train_finetune(ds.layout.manifest, dense, out / "ft", ds.cfg.backbone, cfg, None, timed)
        total = time.perf_counter() - start
    per_epoch = ", ".join(f"{s:.1f}" for s in timed.times.seconds)
    print(f"fine-tune: 2 epochs {per_epoch} s/epoch; {total:.1f} s in all (caching and the choice included)")
    print(f"shipped: {summary['shipped']} ({summary['candidates']})")
    print(f"tensorflow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}")


if __name__ == "__main__":
    main()
