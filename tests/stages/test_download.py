"""Download stage: local path, file:// URL, a real HTTP server on loopback, the mirror, and refusals; the CLI's
record of what was fetched (the same on every machine) apart from its execution record (where it came from)."""

import zipfile

import pytest

from pipeline.contracts import DownloadRecord
from pipeline.data.archive import MIRROR_ENV, DownloadError, download
from pipeline.files import read_json, sha256_file
from pipeline.stages.download import main
from tests.helpers.params import data_config, tiny_params, write_params
from tests.helpers.servers import serve


def _check_extracted(raw):
    assert len(list(raw.rglob("*.jpg"))) == 40
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".tmp-")]


def _archive_info(url, archive):
    return DownloadRecord(url=url, kind="archive", sha256=sha256_file(archive), size=archive.stat().st_size)


def test_local_path_and_file_url(synthetic_zip, tmp_path):
    info, source = download(data_config(str(synthetic_zip)), tmp_path / "a" / "raw")
    _check_extracted(tmp_path / "a" / "raw")
    assert (info, source) == (_archive_info(str(synthetic_zip), synthetic_zip), str(synthetic_zip))
    info, _ = download(data_config(synthetic_zip.as_uri()), tmp_path / "b" / "raw")
    _check_extracted(tmp_path / "b" / "raw")
    assert info.sha256 == sha256_file(synthetic_zip)
    assert [[p.name for p in (tmp_path / d).iterdir()] for d in "ab"] == [["raw"], ["raw"]]  # JSON: the CLI's


def test_a_folder_is_copied(synthetic_zip, tmp_path):
    with zipfile.ZipFile(synthetic_zip) as zf:
        zf.extractall(tmp_path / "unpacked")
    info, _ = download(data_config(str(tmp_path / "unpacked")), tmp_path / "raw")
    _check_extracted(tmp_path / "raw")
    assert info == DownloadRecord(url=str(tmp_path / "unpacked"), kind="directory")


def test_http_download_verifies_sha256_and_size(synthetic_zip, tmp_path):
    server = serve(synthetic_zip.parent)
    try:
        url = f"http://127.0.0.1:{server.server_port}/{synthetic_zip.name}"
        cfg = data_config(url, sha256=sha256_file(synthetic_zip), size=synthetic_zip.stat().st_size)
        assert download(cfg, tmp_path / "raw") == (_archive_info(url, synthetic_zip), url)
        _check_extracted(tmp_path / "raw")
        with pytest.raises(DownloadError, match="sha256"):
            download(data_config(url, sha256="0" * 64), tmp_path / "raw2", attempts=2)
        assert not (tmp_path / "raw2").exists()
    finally:
        server.shutdown()


def test_mirror_is_used_instead_of_the_network(synthetic_zip, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(synthetic_zip.parent))
    url = f"https://example.invalid/datasets/{synthetic_zip.name}"
    info, source = download(data_config(url), tmp_path / "raw")
    _check_extracted(tmp_path / "raw")
    assert info == _archive_info(url, synthetic_zip)  # what was fetched, not where from
    assert source == str(synthetic_zip)


def test_cli_writes_the_record_and_the_execution_apart(synthetic_zip, tmp_path, monkeypatch):
    """download.json is a DVC output: the same wherever the archive was read from. The mirror path and the
    time go to the execution record, which nothing hashes."""
    monkeypatch.setenv(MIRROR_ENV, str(synthetic_zip.parent))
    url = f"https://example.invalid/datasets/{synthetic_zip.name}"
    params = write_params(tmp_path / "params.yaml", tiny_params({"data": {"url": url}}))
    main(
        [
            "--params",
            str(params),
            "--out",
            str(tmp_path / "raw"),
            "--info",
            str(tmp_path / "download.json"),
            "--execution",
            str(tmp_path / "execution" / "download.json"),
        ]
    )
    _check_extracted(tmp_path / "raw")
    assert read_json(tmp_path / "download.json") == _archive_info(url, synthetic_zip).model_dump(mode="json")
    execution = read_json(tmp_path / "execution" / "download.json")
    assert execution["source"] == str(synthetic_zip) and set(execution) == {
        "source",
        "seconds",
        "started_ms",
        "ended_ms",
    }


def test_unreachable_url_names_url_and_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    url = "http://127.0.0.1:9/none.zip"  # discard port: connection refused at once
    with pytest.raises(DownloadError) as err:
        download(data_config(url), tmp_path / "raw", attempts=2)
    assert url in str(err.value) and MIRROR_ENV in str(err.value)
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, entry):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr(entry, "pwned")
    with pytest.raises(DownloadError, match="unsafe archive entry"):
        download(data_config(str(archive)), tmp_path / "out" / "raw")
    assert not (tmp_path / "out" / "raw").exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_truncated_archive_is_refused(synthetic_zip, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(synthetic_zip.read_bytes()[: synthetic_zip.stat().st_size // 2])
    with pytest.raises(DownloadError):
        download(data_config(str(cut)), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
