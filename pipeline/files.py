"""File helpers shared by every stage: atomic writes (with clean-up after killed runs) that replace only what the
same output wrote before, JSON and CSV, hashing."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline")


class OutputPathError(ValueError):
    """An output path is taken by something the write must not replace: what another writer or a person put there."""


MARKER = ".pipeline-output"  # in every folder output: the name of its writer (DVC hashes and restores it too)
_MAX_PEEK = 16 << 20  # bytes: a larger file is no JSON or CSV header of ours, and is not read to find out


@dataclass(frozen=True)
class Kind:
    """What a write may replace at its path besides nothing, an empty file or an empty folder: a file for which
    `owns` holds (a JSON, CSV, PNG... as this writer writes them); with `writer`, a folder written whole whose
    MARKER names that writer; with `files`, a folder written into file by file, each entry by its own Kind."""

    what: str  # for messages: "a PNG image", "a folder written by prepare"
    owns: Callable[[Path], bool] = lambda path: False
    writer: str | None = None
    files: Mapping[str, Kind] | None = None


def folder_of(writer: str) -> Kind:
    """A folder output written whole by `writer` (atomic_path puts the MARKER in it)."""
    return Kind(f"a folder written by {writer}", writer=writer)


def files_in(what: str, files: Mapping[str, Kind]) -> Kind:
    """A folder (new or not) that a writer adds `files` to, replacing only those, each by its own Kind."""
    return Kind(what, files=files)


def _peek(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _our_json(path: Path) -> bool:
    """Exactly what write_json writes: json.dumps(indent=2) of what it holds (in its own key order), a newline."""
    if path.stat().st_size > _MAX_PEEK:
        return False
    text = path.read_text()
    return text == json.dumps(json.loads(text), indent=2) + "\n"


def csv_kind(columns: Iterable[str]) -> Kind:
    """A CSV whose header begins with `columns`."""
    columns = list(columns)

    def owns(path: Path) -> bool:
        header = _peek(path, _MAX_PEEK).decode().partition("\n")[0]
        return next(csv.reader([header]), [])[: len(columns)] == columns

    return Kind(f"a CSV file with the header {','.join(columns)}", owns)


def magic_kind(what: str, magic: bytes) -> Kind:
    """A binary file that starts with `magic` (a PNG's signature)."""
    return Kind(what, lambda path: _peek(path, len(magic)) == magic)


def zip_kind(what: str, member: str) -> Kind:
    """A zip archive holding `member` (a Keras model: metadata.json; a NumPy .npz: its arrays)."""

    def owns(path: Path) -> bool:
        with zipfile.ZipFile(path) as z:
            return member in z.namelist()

    return Kind(what, owns)


def text_kind(what: str, needle: str, within: int = 4096) -> Kind:
    """A text file holding `needle` in its first `within` bytes (its title, its key)."""
    return Kind(what, lambda path: needle.encode() in _peek(path, within))


JSON = Kind("a JSON file as this pipeline writes them (json.dumps, indent 2)", _our_json)


def check_output(target: Path | str, kind: Kind) -> Path:
    """Raise OutputPathError, naming the path, unless writing `kind` at `target` replaces nothing, or only what
    such a write left there before. Links are judged by what they point to, a dangling one replaced."""
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise OutputPathError(f"{target} names no file or folder of its own: refusing to write there")
    if not os.path.lexists(target):
        above = next(p for p in target.absolute().parents if os.path.lexists(p))
        if not above.is_dir():
            raise OutputPathError(f"{target}: {above} is not a folder: refusing to write there")
        return target
    if target.is_symlink():
        if kind.writer or kind.files is not None and not target.is_dir():  # a folder cannot replace a link
            raise OutputPathError(f"{target} is a symbolic link: refusing to replace it with a folder")
        if not target.exists():
            return target  # dangling: nothing behind it to lose
    if target.is_dir():
        if kind.files is not None:
            for name, inner in kind.files.items():
                check_output(target / name, inner)
        elif not kind.writer:
            raise OutputPathError(f"{target} is a folder: refusing to replace it with a file (give a file path)")
        elif any(target.iterdir()) and (marker := _marker(target)) != kind.writer:
            why = f"its {MARKER} names {marker}" if marker else f"no {MARKER} in it"
            raise OutputPathError(
                f"{target} is a folder that {kind.writer} did not write ({why}): refusing to replace it; give a "
                "new or empty folder, or one it wrote"
            )
    elif not target.is_file():
        raise OutputPathError(f"{target} exists and is not a regular file or folder: refusing to replace it")
    elif kind.writer or kind.files is not None:
        raise OutputPathError(f"{target} is a file: refusing to replace it with a folder")
    elif target.stat().st_size and not _owns(kind, target):
        raise OutputPathError(f"{target} exists and is not {kind.what}: refusing to replace it (give another path)")
    return target


def _owns(kind: Kind, path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, RecursionError, csv.Error, zipfile.BadZipFile):  # not UTF-8, JSON
        return kind.owns(path)
    return False


def claim_folder(folder: Path | str, kind: Kind) -> Path:
    """`folder` (new, empty or already its) made `kind.writer`'s: one written into, not replaced (a cache)."""
    assert kind.writer, "claim_folder takes a folder_of(writer) kind"
    folder = check_output(folder, kind)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(kind.writer + "\n")
    return folder


def _marker(folder: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        return (folder / MARKER).read_text().strip()
    return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts: its parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        pass
    return True


def remove_stale_temps(target: Path) -> None:
    """Delete the `.tmp-<name>-<pid>-*` siblings of `target` whose writer process is gone (killed runs).
    A live writer's temp is left alone, so concurrent writers never pull each other's files away."""
    pattern = re.compile(rf"\.tmp-{re.escape(target.name)}-(\d+)-[a-z0-9_]{{8}}")
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not pid_alive(int(match[1])):
            log.info("removing %s left by a killed run", entry)
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(target: Path | str) -> Iterator[Path]:
    """A temporary folder `.tmp-<name>-<pid>-*` beside `target`, removed afterwards whatever happens; one that a
    killed run left behind is removed by the next call for the same `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=target.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: Path | str, kind: Kind) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; rename it onto `target` only if the block succeeds, and only over
    nothing or what a write of `kind` left there (check_output, before the block's work and again after it).
    A killed process leaves at worst a `.tmp-*` sibling (removed by the next write of `target`), never a
    half-written `target`. A folder output (`kind.writer`) gets the MARKER naming its writer."""
    target = check_output(target, kind)  # before the work: a wrong path is reported without waiting for it
    with scratch_dir(target) as scratch:
        tmp = scratch / target.name
        yield tmp
        if kind.writer and tmp.is_dir():
            (tmp / MARKER).write_text(kind.writer + "\n")
        check_output(target, kind)
        if target.is_dir() and not target.is_symlink():
            os.replace(target, scratch / ".old")  # a rename, not rmtree: never a half-deleted target
        os.replace(tmp, target)


def write_text(path: Path | str, text: str, kind: Kind) -> None:
    with atomic_path(path, kind) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", JSON)


def read_json(path: Path | str) -> dict[str, Any]:
    """Every JSON file this pipeline reads holds an object; its values stay Any, as each file's writer sets them."""
    if isinstance(obj := json.loads(Path(path).read_text()), dict):
        return obj
    raise ValueError(f"{path} holds a JSON {type(obj).__name__}, not an object")


def sha256_json(obj: object) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; what JSON cannot hold, as its str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_csv(path: Path | str, header: list[str], rows: Iterable[Iterable[object]], kind: Kind | None = None) -> None:
    """`kind`: what it may replace, by default a CSV with this same header."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue(), kind or csv_kind(header))
