"""Fetch a dataset (URL, file:// URL, local archive or folder, or a local mirror), verify it, extract it safely.

Offline use: set PIPELINE_DATA_MIRROR to a folder holding a file with the archive's name (e.g. ../shared/mirror);
it is used instead of the network and verified the same way."""

from __future__ import annotations

import contextlib
import http.client
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm import tqdm

from pipeline.config import DataConfig
from pipeline.contracts import DownloadRecord
from pipeline.data.local_source import (  # noqa: F401  (DownloadError, RefusedError, MIRROR_ENV: raised / read here)
    MIRROR_ENV,
    DownloadError,
    RefusedError,
    copy_dataset,
    local_fingerprint,
    resolve_source,
)
from pipeline.files import atomic_path, folder_of, log, scratch_dir, sha256_file
from pipeline.layout import DATA_ROOT

RAW = folder_of("download")  # raw/ is replaced whole: only a folder that download wrote (or an empty one)
OFFLINE_HINT = (
    f"Offline? Put the archive in a folder and set {MIRROR_ENV}=<folder>, "
    "or set the dataset's url (datasets.<name>.url) to a local path."
)


def fetch(
    url: str, dest: Path, deadline_s: float, timeout: float = 30, max_bytes: int | None = None, t0: float | None = None
) -> None:
    """Write `url` to `dest`, all of it within `deadline_s` of monotonic time `t0` (default: now). The socket
    timeout bounds one read only: a server sending a byte now and then is cut off by this. Used by predict too."""
    end = (time.monotonic() if t0 is None else t0) + deadline_s

    def read_timeout() -> float:
        if (left := end - time.monotonic()) <= 0:
            raise RefusedError(f"{url}: not downloaded within the {deadline_s:g} s deadline (server too slow?)")
        return min(timeout, left)

    with urllib.request.urlopen(url, timeout=read_timeout()) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)  # http.client keeps it private
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
            while True:
                if sock is not None:
                    sock.settimeout(read_timeout())  # a single blocked read ends by the deadline too
                if not (block := resp.read1(1 << 20)):  # read1: what arrived, so the clock is checked often
                    break
                out.write(block)
                bar.update(len(block))
                if max_bytes is not None and out.tell() > max_bytes:
                    raise RefusedError(f"{url}: larger than {max_bytes >> 20} MB")
                read_timeout()
    got = dest.stat().st_size
    if total is not None and got != total:  # urllib returns a dropped connection as a short, "complete" read
        raise DownloadError(f"{url}: connection ended after {got} of {total} bytes (truncated download)")


def _expansion_limit(cfg: DataConfig, compressed: int) -> tuple[int, str]:
    """The most bytes the archive may expand to, and the setting that sets it (the smaller bound wins)."""
    by_size, by_ratio = cfg.max_expanded_mb * 10**6, int(cfg.max_expansion_ratio * compressed)
    if by_size <= by_ratio:
        return by_size, f"data.max_expanded_mb={cfg.max_expanded_mb}"
    return by_ratio, f"data.max_expansion_ratio={cfg.max_expansion_ratio:g} x {compressed} bytes"


def _refuse_expansion(path: Path, size: int, limit: tuple[int, str], verb: str = "declares") -> None:
    if size > limit[0]:
        raise RefusedError(f"{path}: {verb} {size} bytes expanded, above {limit[1]}: refusing it (archive bomb?)")


def verify_archive(path: Path, cfg: DataConfig) -> str:
    """Check size, sha256 (when pinned), declared expanded size and archive integrity; return the sha256."""
    size = path.stat().st_size
    if cfg.size is not None and size != cfg.size:
        raise DownloadError(f"{path}: size {size} bytes, expected data.size={cfg.size} (truncated download?)")
    digest = sha256_file(path)
    if cfg.sha256 is not None and digest != cfg.sha256.lower():
        raise DownloadError(f"{path}: sha256 {digest} does not match data.sha256={cfg.sha256}")
    limit = _expansion_limit(cfg, size)
    with _archive_errors(path):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:  # the sizes are in the central directory: checked before inflating
                _refuse_expansion(path, sum(m.file_size for m in zf.infolist()), limit)
                bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{path}: corrupted zip member {bad!r}")
        elif tarfile.is_tarfile(path):
            declared = 0
            with tarfile.open(path) as tf:  # read every member: a cut .tar.gz only fails near its end
                for member in tf:
                    declared += member.size
                    _refuse_expansion(path, declared, limit)  # headers come one by one: stop at the first too many
                    if member.isfile() and (f := tf.extractfile(member)) is not None:  # None only for a non-file
                        with f:
                            while f.read(1 << 20):
                                pass
        else:
            raise DownloadError(f"{path}: neither a zip nor a tar archive (corrupted or truncated download?)")
    return digest


@contextlib.contextmanager
def _archive_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as err:
        raise DownloadError(f"{path}: corrupted archive ({type(err).__name__}: {err})") from None


def _check_member(name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise DownloadError(f"unsafe archive entry {name!r} (absolute path or '..'): refusing to extract")


def extract_archive(archive: Path, dest: Path, cfg: DataConfig) -> None:
    """Extract into `dest` plain files and folders only (no links, nothing outside `dest`), stopping as soon as
    more bytes come out than the expansion limit allows, whatever the headers declared."""
    limit, written = _expansion_limit(cfg, archive.stat().st_size), 0
    members: list[tuple[str, bool, Any, str]]  # (name, is a folder, the ZipInfo or TarInfo, why it is refused)
    opener: Callable[[Any], IO[bytes] | None]  # the tar's: None for what is not a plain file (refused above)
    with contextlib.ExitStack() as stack, _archive_errors(archive):
        if zipfile.is_zipfile(archive):
            zf = stack.enter_context(zipfile.ZipFile(archive))
            link = [m.external_attr >> 28 == 0xA for m in zf.filelist]  # top 4 bits of the Unix mode: the file type
            members = [(m.filename, m.is_dir(), m, "is a symlink" * x) for m, x in zip(zf.filelist, link)]
            opener = zf.open
        else:
            tf = stack.enter_context(tarfile.open(archive))
            members = [(m.name, m.isdir(), m, "" if m.isfile() or m.isdir() else "is not a plain file") for m in tf]
            opener = tf.extractfile
        for name, _, _, odd in members:  # all checked before anything is written
            _check_member(name)
            if odd:
                raise DownloadError(f"archive entry {name!r} {odd}: refusing to extract")
        dest.mkdir(parents=True)
        for name, is_dir, member, _ in members:
            target = dest / name.replace("\\", "/")
            (target if is_dir else target.parent).mkdir(parents=True, exist_ok=True)
            if is_dir:
                continue
            src = opener(member)
            assert src is not None  # a plain file (`odd` refused the rest)
            with src, open(target, "wb") as out:
                while block := src.read(1 << 20):
                    written += len(block)
                    _refuse_expansion(archive, written, limit, "would write at least")  # lying headers
                    out.write(block)


def _refuse_overlap(url: str, local: Path | None, raw_dir: Path) -> None:
    """A source that is, holds, or lies in the output (or the project's data folder) would be replaced or
    copied into itself."""
    if local is None:
        return
    src = local.resolve()
    for out in {raw_dir.resolve(), DATA_ROOT.resolve()} if src.is_dir() else {raw_dir.resolve()}:
        if src == out or src.is_relative_to(out) or (src.is_dir() and out.is_relative_to(src)):
            raise RefusedError(f"data.url {url} ({src}) overlaps the output folder {out}: refusing to copy it")


def download(cfg: DataConfig, raw_dir: Path, attempts: int = 3, timeout: float = 30.0) -> tuple[DownloadRecord, str]:
    """Fetch, verify and extract `cfg.url` into `raw_dir`. Returns (what was fetched: the same for the same
    data on any machine, where it was read from: a local path or the URL)."""
    source, local = resolve_source(cfg.url)
    _refuse_overlap(cfg.url, local, raw_dir)
    if local is not None and local.is_dir():  # an already-unpacked folder of class sub-folders
        with atomic_path(raw_dir, RAW) as tmp:
            skipped = copy_dataset(local.resolve(), tmp)
        for s in skipped:
            log.warning("left out %s: %s", s.path, s.reason)
        log.info("copied the image files of folder %s -> %s (%d entries left out)", local, raw_dir, len(skipped))
        return DownloadRecord(url=cfg.url, kind="directory", skipped=skipped or None), source

    start = time.monotonic()  # data.download_deadline_s covers all attempts together
    with scratch_dir(raw_dir.parent / f"{raw_dir.name}.download") as workdir:
        archive = local if local is not None else workdir / "archive"  # local files are read in place
        for attempt in range(1, attempts + 1):
            try:
                if local is None:
                    fetch(source, archive, cfg.download_deadline_s, timeout, t0=start)
                elif not local.exists():
                    raise DownloadError(f"data.url {cfg.url}: no such file {local}")
                digest = verify_archive(archive, cfg)
                break
            except (OSError, http.client.HTTPException, DownloadError) as err:  # URLError is an OSError
                if isinstance(err, RefusedError) or isinstance(err, DownloadError) and local is not None:
                    raise  # past the deadline, too large, or a local file: trying again can't help
                if attempt == attempts:
                    raise DownloadError(
                        f"could not fetch {cfg.url} after {attempts} attempts: {err}\n{OFFLINE_HINT}"
                    ) from None
                log.warning(
                    "attempt %d/%d for %s failed: %s; retrying. %s", attempt, attempts, source, err, OFFLINE_HINT
                )
                time.sleep(2 ** (attempt - 1))
        with atomic_path(raw_dir, RAW) as tmp:
            extract_archive(archive, tmp, cfg)
        size = archive.stat().st_size
    log.info("verified %s (%d bytes, sha256 %s) and extracted it to %s", source, size, digest, raw_dir)
    return DownloadRecord(url=cfg.url, kind="archive", sha256=digest, size=size), source


def source_fingerprint(url: str) -> dict:
    """`url`'s data, the same for the same content: a local archive's or folder's (local_fingerprint), else the URL
    itself."""
    local = resolve_source(url)[1]  # refuses what no download may read (a device, a mirror's parent)
    if local is None or urllib.parse.urlparse(url).scheme not in ("", "file"):  # None: a remote URL
        return {"kind": "url", "url": url}
    return local_fingerprint(url, local)
