"""What the benchmarks share: environment, the machine they ran on, and real cats-vs-dogs images."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZIP = SHARED / "mirror" / "cats_and_dogs_filtered.zip"

# Before TensorFlow is imported: telemetry off, ImageNet weights from the Makefile's writable copy.
for key, value in {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_HOME": str(REPO / ".cache" / "keras_home"),
}.items():
    os.environ.setdefault(key, value)
sys.path.insert(0, str(REPO))


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine() -> str:
    """CPU model, cores, memory, GPUs, load and versions: the context every figure needs."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    mem = next(
        (
            int(line.split()[1]) // 2**20
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        gpus = ""
    import keras
    import numpy
    import tensorflow as tf

    tf_gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"machine: {cpu}, {len(os.sched_getaffinity(0))} cores, {mem} GiB RAM, "
        f"GPU: {gpus or 'none'} (TensorFlow sees {tf_gpus}); {load()}\n"
        f"versions: Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"NumPy {numpy.__version__}"
    )


def real_images(dest: Path, n: int) -> list[Path]:
    """`n` cats-vs-dogs JPEGs (cats and dogs alternating) unzipped under `dest`; listed again from the start
    when `n` exceeds the 3,000 in the archive."""
    root = dest / "cats_and_dogs_filtered"
    if not root.is_dir():
        with zipfile.ZipFile(ZIP) as zf:
            zf.extractall(dest)
    cats, dogs = (sorted(root.glob(f"*/{c}/*.jpg")) for c in ("cats", "dogs"))
    pool = [p for pair in zip(cats, dogs) for p in pair]
    return [pool[i % len(pool)] for i in range(n)]


def write_manifest(images: list[Path], path: Path, split: str = "train") -> Path:
    """A manifest (pipeline/manifest.py) listing `images`, all in `split`; the same file may appear twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "source", "label", "split", "sha256"])
        for p in images:
            writer.writerow([str(p), p.name, p.parent.name, split, "-"])
    return path


def split_data(rows: list, split: str, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image paths and integer labels of one split of a manifest's rows (pipeline.data.manifest.read_manifest)."""
    from pipeline.data.manifest import split_rows

    part = split_rows(rows, split)
    return [r.path for r in part], [classes.index(r.label) for r in part]


def with_autotuner(ds, enabled: bool = True):
    """`ds` with tf.data's autotuner switched on (its default, as before pipeline.model.inputs turned it off) or off."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = enabled
    return ds.with_options(options)
