"""The manifest written by prepare and read by every later stage: one row per usable image."""

from __future__ import annotations

import csv
from dataclasses import astuple, dataclass, fields
from pathlib import Path

IMBALANCE_WARNING = 1.5  # largest / smallest train class above this: prepare warns, suggesting class weights


@dataclass(frozen=True)
class Row:
    path: str  # file the model reads, relative to the manifest's folder (a converted copy when needed)
    source: str  # the original file, relative to the dataset root
    label: str
    split: str
    sha256: str  # of the original file

    def as_list(self) -> list[str]:
        return list(astuple(self))


FIELDS = [f.name for f in fields(Row)]


def read_manifest(path: Path | str) -> list[Row]:
    """Rows with `path` made absolute, so callers don't care where the manifest lives."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != FIELDS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {FIELDS}")
        return [Row(**{**r, "path": str((path.parent / r["path"]).resolve())}) for r in reader]


def classes_of(rows: list[Row]) -> list[str]:
    return sorted({r.label for r in rows})


def split_rows(rows: list[Row], split: str) -> list[Row]:
    return [r for r in rows if r.split == split]


def imbalance_ratio(counts: dict[str, int]) -> float:
    """Largest class count over the smallest: 1.0 is balanced."""
    return round(max(counts.values()) / max(min(counts.values()), 1), 3)
