"""Reading a labelled image-folder dataset: find its root, list every file with its class and given split (or
why it can't be used), and decode every image in parallel.

Layouts understood (class = sub-folder name):
  root/{train,validation[,test]}/<class>/...   splits as given (aliases: val, valid, training, testing)
  root/<class>/...                              no splits given: data/splits.py carves them
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.data.images import check_image
from pipeline.data.naming import IMAGE_SUFFIXES, is_visible
from pipeline.files import sha256_file

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
    "testing": "test",
}


class DatasetError(ValueError):
    """The dataset as a whole can't be used (too few classes or images); the message says why."""


@dataclass(frozen=True)
class Found:
    """An image file found in a class folder."""

    file: Path
    label: str
    split: str | None  # the split folder it was found in; None in a flat layout


@dataclass(frozen=True)
class Usable:
    """An image that decodes: what the manifest records of it."""

    source: str  # relative to the dataset root
    label: str
    split: str | None
    sha256: str  # of the original file
    read_from: Path  # the file the model reads: the original, or its converted copy


@dataclass(frozen=True)
class Scan:
    images: list[Found]
    rejected: list[tuple[Path, str]]  # (file, reason) for files that are no image of any class
    class_files: Counter[str]  # image files per class folder (0: an empty class folder)
    layout_notes: list[str]  # what was assumed where the folder names are ambiguous


def find_root(raw: Path) -> Path:
    """Descend through single wrapper folders (e.g. the archive's top-level folder)."""
    root = raw
    while True:
        dirs = [d for d in root.iterdir() if d.is_dir() and is_visible(d.name)]
        if len(dirs) != 1 or dirs[0].name.lower() in SPLIT_ALIASES:
            return root
        inner = dirs[0]
        if not any(c.is_dir() and is_visible(c.name) for c in inner.iterdir()):
            return root  # a single class folder: leave it to the class checks
        root = inner


def scan(root: Path) -> Scan:
    """Every file under the class folders of `root`, as an image of its class or a rejection with its reason."""
    split_dirs, notes = _split_dirs(root)
    tops = [(d, s) for s, d in split_dirs.items()] if split_dirs else [(root, None)]
    found: list[Found] = []
    rejected: list[tuple[Path, str]] = []
    classes: Counter[str] = Counter()
    for top, split in tops:
        for f in sorted(top.iterdir()):
            if f.is_file():
                rejected.append((f, "outside any class folder"))
        for cls_dir in sorted(d for d in top.iterdir() if d.is_dir()):
            if not is_visible(cls_dir.name):
                rejected.extend((f, "inside a hidden folder") for f in sorted(cls_dir.rglob("*")) if f.is_file())
                continue
            classes[cls_dir.name] += 0
            for f in sorted(cls_dir.rglob("*")):
                if not f.is_file():
                    continue
                if any(not is_visible(part) for part in f.relative_to(cls_dir).parts):
                    rejected.append((f, "hidden file"))
                elif f.suffix.lower() not in IMAGE_SUFFIXES:
                    rejected.append((f, f"not an image file suffix ({f.suffix or 'none'})"))
                else:
                    classes[cls_dir.name] += 1  # a folder holding only .DS_Store or notes counts as empty
                    found.append(Found(f, cls_dir.name, split))
    return Scan(found, rejected, classes, notes)


def _split_dirs(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Split folders of `root`: a folder named like a split (valid/, test/, ...) is one only when it holds class
    folders; one holding image files directly is a class. Both readings of a mixed layout are named in a note."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and is_visible(d.name))
    named = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    splits = {
        SPLIT_ALIASES[d.name.lower()]: d for d in named if any(c.is_dir() and is_visible(c.name) for c in d.iterdir())
    }
    notes = []
    if splits:
        others = [d.name for d in dirs if d not in splits.values()]
        if others:
            notes.append(
                f"read {sorted(d.name for d in splits.values())} as split folders; {others} beside them "
                "are not classes (their files are quarantined as outside any class folder)"
            )
    elif named:
        notes.append(f"{[d.name for d in named]} hold images, not class folders: read as classes of a flat dataset")
    return splits, notes


def unreached(raw: Path, seen: set[Path]) -> list[tuple[Path, str]]:
    """Files the class-folder scan never visits (beside the wrapper folder, __MACOSX/, extra folders)."""
    return [(f, "outside any class folder") for f in sorted(raw.rglob("*")) if f.is_file() and f not in seen]


def path_key(seed: int, key: str) -> str:
    """A stable pseudo-random key of a path: orders files for splitting and names converted copies."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _check(args: tuple[str, str]) -> tuple[str | None, bool, str]:
    src, converted = args
    result = check_image(Path(src), Path(converted))
    return result.reason, result.converted, sha256_file(src) if result.reason is None else ""


def check_images(
    images: list[Found], root: Path, write_dir: Path, final_dir: Path, processes: int | None = None
) -> tuple[list[Usable], list[tuple[Path, str]]]:
    """Decode every image in parallel. Conversions are written to `write_dir` and referenced as `final_dir`
    (they differ while the output folder is still a temp dir). Returns (usable images, [(file, reason)])."""
    jobs = [(str(i.file), str(write_dir / f"{path_key(0, str(i.file.relative_to(root)))[:24]}.png")) for i in images]
    with ProcessPoolExecutor(max_workers=processes or min(8, os.cpu_count() or 1)) as pool:
        results = list(tqdm(pool.map(_check, jobs, chunksize=16), total=len(jobs), desc="check images"))
    usable, quarantine = [], []
    for image, (reason, converted, digest), (_, conv) in zip(images, results, jobs):
        if reason is not None:
            quarantine.append((image.file, reason))
        else:
            read_from = final_dir / Path(conv).name if converted else image.file.resolve()
            usable.append(Usable(str(image.file.relative_to(root)), image.label, image.split, digest, read_from))
    return usable, quarantine
