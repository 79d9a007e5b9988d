"""Shared fixtures: a tiny synthetic image dataset and parameters for a small random-weight backbone."""
from __future__ import annotations

import copy
import os
import socket
import zipfile
from pathlib import Path

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

TINY_PARAMS = {
    "data": {"name": "synthetic", "url": "PLACEHOLDER"},
    "split": {"seed": 7, "test_from_validation": 0.5, "validation": 0.2, "test": 0.2},
    "backbone": {"name": "mobilenet", "alpha": 0.25, "weights": None, "image_size": 32},
    "extract": {"batch_size": 16},
    "dense": {"units": 16, "activation": "relu", "dropout": 0.2, "learning_rate": 0.01, "epochs": 6,
              "patience": 3, "batch_size": 8, "seed": 1},
    "finetune": {"unfreeze_blocks": 1, "learning_rate": 1e-4, "epochs": 2, "patience": 2, "batch_size": 8,
                 "seed": 1, "augment": {"flip": True, "rotation": 0.05, "zoom": 0.1}},
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


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
