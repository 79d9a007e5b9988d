"""A tiny synthetic image dataset: the class is a colour plus a shape, so even untrained features separate it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(220, 40, 40), (40, 60, 220), (40, 200, 60), (230, 200, 30)]
CLASS_NAMES = ["cats", "dogs", "birds", "fish"]


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
    for c, name in enumerate(CLASS_NAMES[:n_classes]):
        for i in range(per_class):
            if layout == "flat":
                make_image(root / name / f"{name}.{i}.jpg", c, i)
            else:
                split = "train" if i < per_class * 0.6 else "validation"
                make_image(root / split / name / f"{name}.{i}.jpg", c, i)
    return root


def zip_dir(folder: Path, archive: Path) -> Path:
    """A zip of `folder` with the folder itself as the archive's top-level (wrapper) folder."""
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, Path(folder.name) / f.relative_to(folder))
    return archive
