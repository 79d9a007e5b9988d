"""Fault suite, archives and downloads: hostile entries refused, damaged downloads detected, retried and refused,
an unreachable source explained in seconds; never anything half-extracted left behind."""

import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

from pipeline.data.archive import MIRROR_ENV, DownloadError, download
from tests.helpers.faults import tar_with
from tests.helpers.images import make_dataset
from tests.helpers.params import data_config, tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.servers import free_port, serve, silent_listener


def _assert_nothing_left(data_dir):
    """No raw/ folder and no temp (download or extraction) left beside it."""
    assert not data_dir.exists() or sorted(p.name for p in data_dir.iterdir()) == []


def _fails(cfg, data_dir, match, **kw):
    with pytest.raises(DownloadError, match=match) as err:
        download(cfg, data_dir / "raw", **kw)
    _assert_nothing_left(data_dir)
    return str(err.value)


@pytest.mark.parametrize(
    "entry, kind, link, match",
    [
        ("../evil.txt", tarfile.REGTYPE, "", "unsafe archive entry"),
        ("/abs/evil.txt", tarfile.REGTYPE, "", "unsafe archive entry"),
        ("a/../../evil.txt", tarfile.REGTYPE, "", "unsafe archive entry"),
        ("ok/link", tarfile.SYMTYPE, "/etc/passwd", "not a plain file"),
        ("ok/hard", tarfile.LNKTYPE, "../../evil.txt", "not a plain file"),
    ],
)
def test_tar_escapes_are_refused(tmp_path, entry, kind, link, match):
    archive = tar_with(tmp_path / "evil.tar.gz", entry, kind, link)
    _fails(data_config(str(archive)), tmp_path / "data", match)
    assert not list(tmp_path.rglob("evil.txt"))


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("ok/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    _fails(data_config(str(archive)), tmp_path / "data", "symlink")


def _deflated_zip(tmp_path):
    src = make_dataset(tmp_path / "src" / "synthetic", per_class=4)
    archive = tmp_path / "synthetic.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*.jpg")):
            zf.write(f, f.relative_to(src.parent))
    return archive


def _flip_middle(archive, out):
    data = bytearray(archive.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    "damage, pin_size, match",
    [
        ("truncate", True, "size .* expected data.size"),
        ("truncate", False, "neither a zip nor a tar"),
        ("flip", False, "corrupted"),
    ],
)
def test_damaged_local_archive_is_refused(tmp_path, damage, pin_size, match):
    good = _deflated_zip(tmp_path)
    bad = tmp_path / "bad.zip"
    if damage == "truncate":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    else:
        _flip_middle(good, bad)
    cfg = data_config(str(bad), size=good.stat().st_size if pin_size else None)
    _fails(cfg, tmp_path / "data", match)


def test_truncated_tar_gz_is_refused(tmp_path):
    src = make_dataset(tmp_path / "src" / "synthetic", per_class=6)
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        tf.add(src, arcname="synthetic")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    _fails(data_config(str(cut)), tmp_path / "data", "corrupted archive")


@pytest.mark.parametrize("mode, match", [("truncate", "truncated download"), ("drop", "Remote end closed")])
def test_broken_http_transfer_is_retried_then_refused(tmp_path, caplog, mode, match):
    archive = _deflated_zip(tmp_path)
    server = serve(archive.parent, mode)
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        message = _fails(data_config(url), tmp_path / "data", match, attempts=2)
    finally:
        server.shutdown()
    assert url in message and MIRROR_ENV in message
    assert "attempt 1/2" in caplog.text


def test_corrupted_http_download_is_retried_then_refused(tmp_path, caplog):
    good = _deflated_zip(tmp_path)
    served = _flip_middle(good, tmp_path / "served" / good.name)  # same size: only the zip test can tell
    server = serve(served.parent)
    try:
        url = f"http://127.0.0.1:{server.server_port}/{good.name}"
        _fails(data_config(url, size=good.stat().st_size), tmp_path / "data", "corrupted", attempts=2)
    finally:
        server.shutdown()
    assert "attempt 1/2" in caplog.text


def test_hung_server_times_out_with_a_message(tmp_path):
    sock = silent_listener()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/data.zip"
        message = _fails(data_config(url), tmp_path / "data", "timed out", attempts=2, timeout=1)
    finally:
        sock.close()
    assert url in message and MIRROR_ENV in message


def test_unreachable_url_fails_fast_from_the_cli_naming_url_and_mirror(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/cats.zip"  # nothing listens: connection refused, like no network
    params = write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "s", "url": url}}))
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.stages.download",
            "--params",
            str(params),
            "--out",
            "data/raw",
            "--info",
            "data/download.json",
            "--execution",
            "data/execution/download.json",
        ],
        cwd=tmp_path,
        env={**env(), MIRROR_ENV: ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 30  # hang guard only: three quick attempts with 1 s + 2 s back-off
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"error: could not fetch {url}" in proc.stderr and f"set {MIRROR_ENV}=<folder>" in proc.stderr
    _assert_nothing_left(tmp_path / "data")  # no execution record either: it is written on success only
