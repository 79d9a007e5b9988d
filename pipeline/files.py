"""File helpers shared by every stage: atomic writes (with clean-up after killed runs), JSON and CSV, hashing."""

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
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("pipeline")


class OutputPathError(ValueError):
    """An output path is taken by something the write must not replace (a folder where a file goes, a device)."""


def _pid_alive(pid: int) -> bool:
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
        if match and not _pid_alive(int(match[1])):
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
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; rename it onto `target` only if the block succeeds.

    A killed process leaves at worst a `.tmp-*` sibling (removed by the next write of `target`), never a
    half-written `target`. Works for files and directories alike.
    """
    target = Path(target)
    with scratch_dir(target) as scratch:
        tmp = scratch / target.name
        _check_replaceable(target)  # before the work too: a wrong path is reported without waiting for it
        yield tmp
        _check_replaceable(target, tmp.is_dir())
        if target.is_dir() and not target.is_symlink():
            os.replace(target, scratch / ".old")  # a rename, not rmtree: never a half-deleted target
        os.replace(tmp, target)


def _check_replaceable(target: Path, writing_dir: bool | None = None) -> None:
    """Only a folder replaces a folder, and only a file replaces a file (or a link): writing a file must never
    delete a folder, and a folder output must not swallow a file someone put at its path."""
    if not os.path.lexists(target) or target.is_symlink():
        return
    if target.is_dir():
        if writing_dir is False:
            raise OutputPathError(f"{target} is a folder: refusing to replace it with a file (give a file path)")
    elif not target.is_file():
        raise OutputPathError(f"{target} exists and is not a regular file or folder: refusing to replace it")
    elif writing_dir:
        raise OutputPathError(f"{target} is a file: refusing to replace it with a folder")


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> object:
    return json.loads(Path(path).read_text())


def sha256_json(obj: object) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; what JSON cannot hold, as its str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_csv(path: Path | str, header: list[str], rows: Iterable[Iterable[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def copy_tree(src: Path, dest: Path) -> list[dict]:
    """Copy the regular files and folders under `src` to `dest`, following no link: a link can leave `src`,
    dangle or loop, and one inside `src` would copy a file twice. Returns what was skipped, with the reason."""
    skipped: list[dict] = []
    dest.mkdir()
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        path, out = Path(entry.path), dest / entry.name
        if entry.is_symlink():
            skipped.append({"path": str(path), "reason": _link_reason(path)})
        elif entry.is_dir(follow_symlinks=False):
            skipped += copy_tree(path, out)
        elif entry.is_file(follow_symlinks=False):
            shutil.copy2(path, out, follow_symlinks=False)
        else:  # a FIFO would block the copy forever; devices and sockets hold no data
            skipped.append({"path": str(path), "reason": "not a regular file or folder"})
    return skipped


def _link_reason(link: Path) -> str:
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return f"dangling symlink (-> {os.readlink(link)}): not followed"
    except (RuntimeError, OSError):  # RuntimeError: Python 3.11's "Symlink loop"
        return f"symlink loop (-> {os.readlink(link)}): not followed"
    return f"symlink to {target}: not followed (links are never copied)"
