"""Fault suite, sources and outputs: outputs that never replace a folder, folder datasets whose links are not
followed, archive bombs, a data.url inside its own output, a trickling server, and the source fingerprint."""

import http.server
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

import pytest

from pipeline.data.archive import DownloadError, download, extract_archive, source_fingerprint
from pipeline.files import JSON, MARKER, OutputPathError, write_json, write_text
from tests.helpers.faults import tar_with
from tests.helpers.images import make_dataset
from tests.helpers.params import data_config, tiny_params, write_params
from tests.helpers.processes import env


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_file_write_never_replaces_a_folder_or_a_fifo(tmp_path):
    folder = tmp_path / "out.json"
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "a.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="is a folder: refusing"):
        write_json(folder, {"x": 1})
    assert (folder / "keep" / "a.txt").read_text() == "mine"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputPathError, match="not a regular file"):
        write_text(tmp_path / "fifo", "x", JSON)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "out.json"]  # no temp left either


def test_stage_cli_with_a_folder_as_output_file_exits_2_and_keeps_it(tmp_path):
    src = make_dataset(tmp_path / "src", per_class=2, layout="flat")
    params = write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "s", "url": str(src)}}))
    (tmp_path / "info" / "sub").mkdir(parents=True)
    (tmp_path / "info" / "sub" / "b.txt").write_text("mine")
    args = ["--params", str(params), "--out", "raw", "--info", "info", "--execution", "execution.json"]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.download", *args],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: argument --info: info is a folder: refusing to replace it with a file" in proc.stderr
    assert (tmp_path / "info" / "sub" / "b.txt").read_text() == "mine"


def test_folder_dataset_links_and_fifos_are_skipped_and_reported(tmp_path):
    src = make_dataset(tmp_path / "src", per_class=2, layout="flat")
    outside = tmp_path / "outside"
    (outside / "cls").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"not yours")
    (outside / "cls" / "x.jpg").write_bytes(b"not yours")
    inside = sorted((src / "cats").iterdir())[0]
    links = {
        "cats/out_file.jpg": outside / "secret.jpg",
        "linked_class": outside / "cls",
        "dogs/dangling.jpg": tmp_path / "gone.jpg",
        "dogs/loop.jpg": src / "dogs" / "loop.jpg",
        "dogs/inside.jpg": inside,
    }
    for name, target in links.items():
        (src / name).symlink_to(target)
    os.mkfifo(src / "cats" / "pipe.jpg")  # copying it would block forever
    info, _ = download(data_config(str(src)), tmp_path / "data" / "raw")
    raw = tmp_path / "data" / "raw"
    assert not any(p.is_symlink() for p in raw.rglob("*"))
    assert _tree(raw) == [MARKER] + [t for t in _tree(src) if t not in links and not t.endswith("pipe.jpg")]
    reasons = {s.path: s.reason for s in info.skipped or []}  # relative: the same record on any machine
    assert sorted(reasons) == sorted([*links, "cats/pipe.jpg"])
    for name, target in links.items():
        assert reasons[name] == f"symlink (-> {target}): not followed"
    assert reasons["cats/pipe.jpg"] == "not a regular file or folder"


def test_tar_link_staying_inside_is_refused_too(tmp_path):
    archive = tar_with(tmp_path / "t.tar.gz", "ok/link", tarfile.SYMTYPE, "sibling.jpg")
    with pytest.raises(DownloadError, match="is not a plain file"):
        download(data_config(str(archive)), tmp_path / "data" / "raw")


def _zeros_zip(path, mb):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("c/zeros.jpg", "w") as f:
        for _ in range(mb):
            f.write(bytes(1 << 20))
    return path


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"max_expanded_mb": 5, "max_expansion_ratio": 10**6}, r"above data.max_expanded_mb=5"),
        ({"max_expanded_mb": 20000, "max_expansion_ratio": 100}, r"above data.max_expansion_ratio=100 x"),
    ],
)
def test_zip_bomb_is_refused_before_writing(tmp_path, keys, match):
    archive = _zeros_zip(tmp_path / "bomb.zip", 20)  # 20 MB of zeros: about 20 KB compressed
    with pytest.raises(DownloadError, match=match):
        download(data_config(str(archive), **keys), tmp_path / "data" / "raw")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


def test_extraction_stops_at_the_bound_whatever_the_headers_said(tmp_path):
    archive = _zeros_zip(tmp_path / "bomb.zip", 12)
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match="would write at least"):  # no verify_archive: only the write guard
        extract_archive(archive, dest, data_config(str(archive), max_expanded_mb=5, max_expansion_ratio=10**6))
    assert (dest / "c" / "zeros.jpg").stat().st_size <= 5 * 10**6


def test_data_url_overlapping_its_output_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the project's data folder is ./data
    raw = tmp_path / "data" / "s" / "raw"
    make_dataset(raw, per_class=2, layout="flat")
    make_dataset(tmp_path / "data" / "other", per_class=2, layout="flat")  # another dataset's folder
    before = _tree(tmp_path / "data")
    for url in (raw, raw / "cats", tmp_path / "data" / "s", tmp_path / "data" / "other", tmp_path):
        with pytest.raises(DownloadError, match="overlaps the output folder"):
            download(data_config(str(url)), raw)
        assert _tree(tmp_path / "data") == before


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes, then sends one every `gap` seconds (0: sends none and waits)."""

    gap = 0.5

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                if self.gap:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                time.sleep(self.gap or 10)
        except OSError:  # the client gave up: what the test expects
            pass


@pytest.mark.parametrize("gap", [0.5, 0])
def test_trickling_or_stalled_server_is_cut_off_at_the_deadline(tmp_path, gap):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Trickle,), {"gap": gap}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/data.zip"
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError) as err:
            download(data_config(url, download_deadline_s=2), tmp_path / "data" / "raw", timeout=30)
    finally:
        server.shutdown()
    assert 1.9 < time.monotonic() - start < 6  # one attempt: a deadline is not retried
    assert str(err.value).startswith(f"{url}: not downloaded within the 2 s deadline")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


def test_source_fingerprint_follows_content_and_nothing_outside(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"one")
    first = source_fingerprint(str(archive))
    assert first == source_fingerprint(f"file://{archive}") and first["kind"] == "file"
    assert first == {"kind": "file", "size": 3, "mtime_ns": archive.stat().st_mtime_ns}  # no hash: no-op stays cheap
    archive.write_bytes(b"twos")
    assert source_fingerprint(str(archive)) != first

    src = make_dataset(tmp_path / "src", per_class=2, layout="flat")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "x.jpg").write_bytes(bytes(5000))
    (src / "linked").symlink_to(tmp_path / "big")
    folder = source_fingerprint(str(src))
    assert folder == source_fingerprint(str(src))
    assert folder["kind"] == "folder" and folder["files"] == 4
    assert folder["bytes"] == sum(p.stat().st_size for p in src.rglob("*.jpg") if "linked" not in p.parts)
    victim = sorted((src / "dogs").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert source_fingerprint(str(src))["digest"] != folder["digest"]
    assert json.dumps(folder, sort_keys=True)  # plain JSON, as the source stage writes it
    assert source_fingerprint("https://example.com/d.zip") == {"kind": "url", "url": "https://example.com/d.zip"}
    with pytest.raises(DownloadError, match="no such file or folder"):
        source_fingerprint(str(tmp_path / "missing"))
