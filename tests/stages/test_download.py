"""Download stage: local path, file:// URL, a real HTTP server on loopback, the mirror, and refusals."""
import functools
import http.server
import threading
import zipfile

import pytest

from pipeline.config import DataConfig
from pipeline.download import MIRROR_ENV, DownloadError, download
from pipeline.io import sha256_file


def _serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _check_extracted(raw):
    assert len(list(raw.rglob("*.jpg"))) == 40
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".tmp-")]


def test_local_path_and_file_url(synthetic_zip, tmp_path):
    download(DataConfig(name="s", url=str(synthetic_zip)), tmp_path / "a" / "raw", tmp_path / "a" / "d.json")
    _check_extracted(tmp_path / "a" / "raw")
    download(DataConfig(name="s", url=synthetic_zip.as_uri()), tmp_path / "b" / "raw", tmp_path / "b" / "d.json")
    _check_extracted(tmp_path / "b" / "raw")


def test_http_download_verifies_sha256_and_size(synthetic_zip, tmp_path):
    server = _serve(synthetic_zip.parent)
    try:
        url = f"http://127.0.0.1:{server.server_port}/{synthetic_zip.name}"
        cfg = DataConfig(name="s", url=url, sha256=sha256_file(synthetic_zip), size=synthetic_zip.stat().st_size)
        download(cfg, tmp_path / "raw", tmp_path / "d.json")
        _check_extracted(tmp_path / "raw")
        bad = DataConfig(name="s", url=url, sha256="0" * 64)
        with pytest.raises(DownloadError, match="sha256"):
            download(bad, tmp_path / "raw2", tmp_path / "d2.json", attempts=2)
        assert not (tmp_path / "raw2").exists()
    finally:
        server.shutdown()


def test_mirror_is_used_instead_of_the_network(synthetic_zip, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(synthetic_zip.parent))
    cfg = DataConfig(name="s", url=f"https://example.invalid/datasets/{synthetic_zip.name}")
    download(cfg, tmp_path / "raw", tmp_path / "d.json")
    _check_extracted(tmp_path / "raw")


def test_unreachable_url_names_url_and_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    url = "http://127.0.0.1:9/none.zip"  # discard port: connection refused at once
    with pytest.raises(DownloadError) as err:
        download(DataConfig(name="s", url=url), tmp_path / "raw", tmp_path / "d.json", attempts=2)
    assert url in str(err.value) and MIRROR_ENV in str(err.value)
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr(entry, "pwned")
    with pytest.raises(DownloadError, match="unsafe archive entry"):
        download(DataConfig(name="s", url=str(archive)), tmp_path / "out" / "raw", tmp_path / "d.json")
    assert not (tmp_path / "out" / "raw").exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_truncated_archive_is_refused(synthetic_zip, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(synthetic_zip.read_bytes()[: synthetic_zip.stat().st_size // 2])
    with pytest.raises(DownloadError):
        download(DataConfig(name="s", url=str(cut)), tmp_path / "raw", tmp_path / "d.json")
    assert not (tmp_path / "raw").exists()
