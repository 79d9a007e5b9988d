"""Fetch a dataset archive (URL, file:// URL, local path or local mirror), verify it, extract it safely.

Offline use: set PIPELINE_DATA_MIRROR to a folder holding a file with the archive's name
(e.g. ../shared/mirror); it is used instead of the network and verified the same way.
"""
from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipeline.config import DataConfig
from pipeline.files import atomic_path, log, scratch_dir, sha256_file

MIRROR_ENV = "PIPELINE_DATA_MIRROR"
OFFLINE_HINT = (f"Offline? Put the archive in a folder and set {MIRROR_ENV}=<folder>, "
                "or set data.url to a local path.")


class DownloadError(RuntimeError):
    """The archive could not be fetched, failed verification, or is unsafe to extract."""


def resolve_source(url: str) -> tuple[str, Path | None]:
    """Return (what will be read, local path or None for a remote URL); a mirror copy wins over the network."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        return url, Path(urllib.parse.unquote(parsed.path) if parsed.scheme else url).expanduser()
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        candidate = Path(mirror) / Path(parsed.path).name
        if candidate.exists():
            return str(candidate), candidate
        log.warning("%s=%s has no %s; fetching %s", MIRROR_ENV, mirror, candidate.name, url)
    return url, None


def _fetch(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    got = dest.stat().st_size
    if total is not None and got != total:  # urllib returns a dropped connection as a short, "complete" read
        raise DownloadError(f"{url}: connection ended after {got} of {total} bytes (truncated download)")


def verify_archive(path: Path, cfg: DataConfig) -> str:
    """Check size, sha256 (when pinned) and archive integrity; return the sha256."""
    size = path.stat().st_size
    if cfg.size is not None and size != cfg.size:
        raise DownloadError(f"{path}: size {size} bytes, expected data.size={cfg.size} (truncated download?)")
    digest = sha256_file(path)
    if cfg.sha256 is not None and digest != cfg.sha256.lower():
        raise DownloadError(f"{path}: sha256 {digest} does not match data.sha256={cfg.sha256}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{path}: corrupted zip member {bad!r}")
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:  # read every member: a cut .tar.gz only fails near its end
                for member in tf:
                    if member.isfile():
                        with tf.extractfile(member) as f:
                            while f.read(1 << 20):
                                pass
        else:
            raise DownloadError(f"{path}: neither a zip nor a tar archive (corrupted or truncated download?)")
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as err:
        raise DownloadError(f"{path}: corrupted archive ({type(err).__name__}: {err})") from None
    return digest


def _check_member(name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise DownloadError(f"unsafe archive entry {name!r} (absolute path or '..'): refusing to extract")


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract into `dest`, refusing entries that would land outside it (zip-slip) or links."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _check_member(member.filename)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(f"archive entry {member.filename!r} is a symlink: refusing to extract")
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                _check_member(member.name)
                if not (member.isfile() or member.isdir()):
                    raise DownloadError(f"archive entry {member.name!r} is not a plain file: refusing to extract")
            tf.extractall(dest, filter="data")


def download(cfg: DataConfig, raw_dir: Path, attempts: int = 3, timeout: float = 30.0) -> tuple[dict, str]:
    """Fetch, verify and extract `cfg.url` into `raw_dir`. Returns (what was fetched: the same for the same
    data on any machine, where it was read from: a local path or the URL)."""
    source, local = resolve_source(cfg.url)
    if local is not None and local.is_dir():  # an already-unpacked folder of class sub-folders
        with atomic_path(raw_dir) as tmp:
            shutil.copytree(local, tmp)
        log.info("copied folder %s -> %s", local, raw_dir)
        return {"url": cfg.url, "kind": "directory"}, source

    with scratch_dir(raw_dir.parent / f"{raw_dir.name}.download") as workdir:
        archive = local if local is not None else workdir / "archive"  # local files are read in place
        for attempt in range(1, attempts + 1):
            try:
                if local is None:
                    _fetch(source, archive, timeout)
                elif not local.exists():
                    raise DownloadError(f"data.url {cfg.url}: no such file {local}")
                digest = verify_archive(archive, cfg)
                break
            except (OSError, http.client.HTTPException, DownloadError) as err:  # URLError is an OSError
                if isinstance(err, DownloadError) and local is not None:
                    raise  # a local file does not get better by re-reading it
                if attempt == attempts:
                    raise DownloadError(f"could not fetch {cfg.url} after {attempts} attempts: {err}\n"
                                        f"{OFFLINE_HINT}") from None
                log.warning("attempt %d/%d for %s failed: %s; retrying. %s", attempt, attempts, source, err,
                            OFFLINE_HINT)
                time.sleep(2 ** (attempt - 1))
        with atomic_path(raw_dir) as tmp:
            extract_archive(archive, tmp)
        size = archive.stat().st_size
    log.info("verified %s (%d bytes, sha256 %s) and extracted it to %s", source, size, digest, raw_dir)
    return {"url": cfg.url, "sha256": digest, "size": size, "kind": "archive"}, source
