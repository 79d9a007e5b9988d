"""Byte-level comparison of two output folders, saying precisely what differs: which file, which member of a
zip archive (model.keras), which keys of a JSON document."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

SHOWN = 5  # differences listed per file


def _json_diff(a: object, b: object, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _json_diff(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _json_diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where or '.'}: {str(a)[:80]} != {str(b)[:80]}"]


def describe(name: str, a: bytes, b: bytes) -> list[str]:
    """Why two versions of the file `name` differ; members of zip archives and JSON documents in detail."""
    if a == b:
        return []
    if zipfile.is_zipfile(io.BytesIO(a)) and zipfile.is_zipfile(io.BytesIO(b)):
        za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
        out = [f"{name}: zip members {za.namelist()} != {zb.namelist()}"] if za.namelist() != zb.namelist() else []
        out += [
            f"{name}: member {x.filename} dated {x.date_time} != {y.date_time}"
            for x, y in zip(za.infolist(), zb.infolist())
            if x.date_time != y.date_time
        ]
        for member in sorted(set(za.namelist()) & set(zb.namelist())):
            out += describe(f"{name}!{member}", za.read(member), zb.read(member))
        return out or [f"{name}: zip archives differ outside their members"]
    if name.endswith(".json"):
        try:
            found = _json_diff(json.loads(a), json.loads(b))
        except ValueError:
            found = []
        if found:
            more = f" (+{len(found) - SHOWN} more)" if len(found) > SHOWN else ""
            return [f"{name}: {len(found)} value(s) differ{more}: " + "; ".join(found[:SHOWN])]
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return [f"{name}: {len(a)} vs {len(b)} bytes, first difference at byte {at}"]


def folder_differences(a: Path, b: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every file under `a` or `b` (paths relative to them; top-level entries in `skip` left out) that is
    missing on one side or differs in its bytes."""

    def files(root: Path) -> dict[str, Path]:
        return {
            p.relative_to(root).as_posix(): p
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in skip
        }

    fa, fb = files(a), files(b)
    out = [f"{rel}: only in {a if rel in fa else b}" for rel in sorted(set(fa) ^ set(fb))]
    return out + [
        d for rel in sorted(set(fa) & set(fb)) for d in describe(rel, fa[rel].read_bytes(), fb[rel].read_bytes())
    ]
