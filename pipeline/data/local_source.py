"""Where a dataset's URL is read from on this machine, and what of a local folder is a dataset.

A URL is read from the network, from one file of the offline mirror (PIPELINE_DATA_MIRROR), or from a local archive
or folder. Each way reads only what it was given: a mirror maps a URL to the file of the same name inside it, or
refuses; a device or FIFO is refused for what it is (reading /dev/zero never ends); from a folder only a dataset's
files are copied (visible image files, links never followed), and what was left out is listed with its reason, so
a folder URL pointing at a home folder copies neither `.ssh/` nor `.netrc` into raw/ and the DVC cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pipeline.contracts import Skipped
from pipeline.data.naming import IMAGE_SUFFIXES, is_visible
from pipeline.files import log

MIRROR_ENV = "PIPELINE_DATA_MIRROR"
_TOP = PurePosixPath()


class DownloadError(RuntimeError):
    """The dataset could not be read or fetched, failed verification, or is unsafe to extract."""


class RefusedError(DownloadError):
    """Refused for what it is (a device, too large, past the deadline): trying again can't help."""


def _kind(mode: int) -> str | None:
    """What a file that is neither regular nor a folder is, for the message; None for those two."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a socket" if stat.S_ISSOCK(mode) else "special")


def _refuse_special(url: str, path: Path) -> None:
    try:
        kind = _kind(path.stat().st_mode)
    except OSError:  # missing: each caller says so in its own words
        return
    if kind:
        raise RefusedError(f"data.url {url}: {path} is {kind}, not a regular file or folder: refusing to read it")


def _mirror_file(mirror: Path, url: str) -> Path | None:
    """The mirror's file for `url`: the one named like the URL's last path segment, directly inside `mirror`."""
    name = urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]  # not PurePosixPath's: it drops a trailing "/"
    if name in ("", ".", ".."):
        raise RefusedError(f"{url}: no file name to look up in {MIRROR_ENV}={mirror} (the URL ends in {name or '/'!r})")
    candidate = mirror / name
    if not os.path.lexists(candidate):
        return None
    inside = candidate.resolve().parent == mirror.resolve()
    if not inside or not candidate.is_file():
        what = "a link out of the mirror" if not inside else _kind(candidate.stat().st_mode) or "a folder"
        raise RefusedError(f"{url}: {candidate} in {MIRROR_ENV} is {what}, not a file: refusing to read it")
    return candidate


def resolve_source(url: str) -> tuple[str, Path | None]:
    """(what will be read, local path or None for a remote URL); a mirror copy wins over the network."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        local = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url).expanduser()
        _refuse_special(url, local)
        return url, local
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        if (candidate := _mirror_file(Path(mirror), url)) is not None:
            return str(candidate), candidate
        log.warning("%s=%s has no file %s; fetching %s", MIRROR_ENV, mirror, parsed.path.rsplit("/", 1)[-1], url)
    return url, None


def dataset_entries(src: Path, rel: PurePosixPath = _TOP) -> Iterator[tuple[str, os.DirEntry, str]]:
    """(path relative to `src`, entry, "" to copy or the reason it is left out) for what is under `src`, sorted,
    never following a link. A hidden or left-out folder is one entry: nothing inside it is read."""
    for entry in sorted(os.scandir(src / rel), key=lambda e: e.name):
        path = (rel / entry.name).as_posix()
        if not is_visible(entry.name):
            yield path, entry, "hidden (never copied)"
        elif entry.is_symlink():
            yield path, entry, f"symlink (-> {os.readlink(entry.path)}): not followed"
        elif entry.is_dir(follow_symlinks=False):
            yield path, entry, ""
            yield from dataset_entries(src, rel / entry.name)
        elif not entry.is_file(follow_symlinks=False):  # a FIFO would block the copy forever
            yield path, entry, "not a regular file or folder"
        elif Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            yield path, entry, f"not an image file ({Path(entry.name).suffix or 'no suffix'})"
        else:
            yield path, entry, ""


def copy_dataset(src: Path, dest: Path) -> list[Skipped]:
    """Copy `src`'s image files and folders to `dest` (see dataset_entries); return what was left out and why."""
    skipped: list[Skipped] = []
    dest.mkdir()
    for rel, entry, reason in dataset_entries(src):
        if reason:
            skipped.append(Skipped(path=rel, reason=reason))
        elif entry.is_dir(follow_symlinks=False):
            (dest / rel).mkdir()
        else:
            shutil.copy2(entry.path, dest / rel, follow_symlinks=False)
    return skipped


def local_fingerprint(url: str, local: Path) -> dict:
    """A local archive's size and mtime; a folder's count, bytes and digest of each (path, size, mtime) that
    copy_dataset would copy. Trusted instead of the bytes (a 4 GB archive re-hashed on every `dvc repro` costs
    seconds): a file rewritten with the same size and mtime is not seen; the download stage hashes what it reads."""
    if local.is_file():
        st = local.stat()
        return {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if not local.is_dir():
        raise DownloadError(f"data.url {url}: no such file or folder {local}")
    entries, count, total = [], 0, 0
    for rel, entry, reason in dataset_entries(local):
        if not reason and entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            count, total = count + 1, total + st.st_size
            entries.append([rel, st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return {"kind": "folder", "files": count, "bytes": total, "digest": digest}
