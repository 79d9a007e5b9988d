"""Shared fixtures: a tiny synthetic image dataset and parameters for a small random-weight backbone."""
from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Randomly initialised MobileNets output ~1e-18 (activations vanish without trained BatchNorm statistics),
# so even the tiny tests use the real ImageNet weights, from a writable copy of ../shared/keras_home.
if "KERAS_HOME" not in os.environ and (SHARED / "keras_home" / "models").is_dir():
    _home = Path(tempfile.mkdtemp(prefix="keras_home-"))
    shutil.copytree(SHARED / "keras_home" / "models", _home / "models")
    os.environ["KERAS_HOME"] = str(_home)

TINY_PARAMS = {
    "data": {"name": "synthetic", "url": "PLACEHOLDER", "sha256": None, "size": None},
    "split": {"seed": 7, "test_from_validation": 0.5, "validation": 0.2, "test": 0.2},
    "backbone": {"name": "mobilenet", "alpha": 1.0, "weights": "imagenet", "image_size": 32},
    "extract": {"batch_size": 16},
    "dense": {"units": 16, "activation": "relu", "dropout": 0.2, "learning_rate": 0.01, "epochs": 6,
              "patience": 3, "batch_size": 8, "seed": 1},
    "finetune": {"unfreeze_blocks": 1, "learning_rate": 1e-4, "epochs": 2, "patience": 2, "batch_size": 8,
                 "seed": 1, "augment": {"flip": True, "rotation": 0.05, "zoom": 0.1}},
    "evaluate": {"tta_flip": True},
}
COLOURS = [(220, 40, 40), (40, 60, 220), (40, 200, 60), (230, 200, 30)]


def make_image(path: Path, cls: int, i: int, size: int = 48) -> None:
    """Class = dominant colour + shape; per-image jitter so no two files are identical."""
    rng = np.random.default_rng(cls * 1000 + i)
    base = np.array(COLOURS[cls], dtype=np.float64)
    arr = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    a, b = int(rng.integers(4, 14)), int(rng.integers(30, 44))
    (draw.ellipse if cls % 2 else draw.rectangle)([a, a, b, b], fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=92)


def make_dataset(root: Path, n_classes: int = 2, per_class: int = 20, layout: str = "split") -> Path:
    """layout "split": root/{train,validation}/<class>/ (like the cats-vs-dogs archive); "flat": root/<class>/."""
    names = ["cats", "dogs", "birds", "fish"][:n_classes]
    for c, name in enumerate(names):
        for i in range(per_class):
            if layout == "flat":
                make_image(root / name / f"{name}.{i}.jpg", c, i)
            else:
                split = "train" if i < per_class * 0.6 else "validation"
                make_image(root / split / name / f"{name}.{i}.jpg", c, i)
    return root


def zip_dir(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, Path(folder.name) / f.relative_to(folder))
    return archive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_params() -> dict:
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def synthetic_zip(tmp_path: Path) -> Path:
    src = make_dataset(tmp_path / "src" / "synthetic")
    return zip_dir(src, tmp_path / "synthetic.zip")


def run_stages(d: Path, cfg, first: str = "extract") -> None:
    """The stages after prepare, on the layout dvc.yaml uses under data/<name>/ (here `d`)."""
    from pipeline.evaluate import evaluate
    from pipeline.extract import extract
    from pipeline.train_dense import train_dense
    from pipeline.train_finetune import train_finetune

    manifest, models = d / "prepared" / "manifest.csv", d / "models"
    steps = {
        "extract": lambda: extract(manifest, d / "features", cfg.backbone, cfg.extract),
        "train_dense": lambda: train_dense(d / "features", models / "dense", cfg.dense),
        "train_finetune": lambda: train_finetune(manifest, models / "dense" / "model.keras", models / "finetune",
                                                 cfg.backbone, cfg.finetune),
        "evaluate": lambda: evaluate(d / "features", manifest, models / "dense", models / "finetune",
                                     d / "reports", cfg.backbone, cfg.evaluate),
    }
    names = list(steps)
    for name in names[names.index(first):]:
        steps[name]()


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real `mlflow server` on loopback (sqlite store, proxied artifacts, both under tmp); yields its URL.

    One worker and no job runner: 2 processes and ~7 s to start instead of 13 and ~18 s. Shared by the whole
    session, so tests use their own experiment / registered model names."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(f"{url}/health", proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: the server and its worker, nothing else
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
