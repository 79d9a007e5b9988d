"""Fault suite, paths outside what the user gave: no DVC command on any params.yaml removes or writes outside the
project, no dataset name reaches a shell, reserved names are refused, a mirror maps a URL to one file inside it, a
local folder gives only its image files (never hidden ones), and a device or FIFO is refused at once."""

import os
import subprocess
import sys
import threading

import pytest

from pipeline.data.archive import MIRROR_ENV, DownloadError, download, source_fingerprint
from pipeline.datasets import read_list
from pipeline.files import MARKER
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import data_config, params_text, tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import folder_project


def _run(cmd, cwd, **extra):
    return subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=300)


def _snapshot(root):
    """Every path under `root` with its mode, size, mtime and bytes: what a removal, write or chmod would change."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            path.is_file() and path.read_bytes(),
        )
    return out


@pytest.fixture
def project(tmp_path):
    return folder_project(tmp_path)


def _with_dataset(root, source, name):
    """params.yaml with a second dataset `name` beside `tiny`, as a user would edit it (the checked list as it was)."""
    params = tiny_params({"data": {"name": "tiny", "url": str(source)}})
    params["datasets"][name] = {"url": str(source)}
    write_params(root / "params.yaml", params)


def test_no_dvc_command_removes_or_writes_outside_the_project(project, tmp_path):
    root, source = project
    victim = tmp_path / "victim"  # where data/../../victim/<out> points from the project
    for rel in ("raw/precious.jpg", "prepared/manifest.csv", "features/meta.json", "models/dense/model.keras"):
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_text("keep me")
    (victim / "raw" / "precious.jpg").chmod(0o400)
    before = _snapshot(victim)
    _with_dataset(root, source, "../../victim")
    assert read_list(root / "data" / "datasets.yaml") == ["tiny"]  # refused: the list DVC loops over is unchanged
    for cmd in (
        ["dvc", "repro"],
        ["dvc", "repro", "download"],
        ["dvc", "repro", "-s", "download@../../victim"],
        ["dvc", "repro", "-s", "prepare@../../victim"],
        ["dvc", "repro", "-s", "--force", "train_dense@../../victim"],
        ["dvc", "exp", "run"],
        ["dvc", "checkout"],
        ["dvc", "status"],
    ):
        done = _run(cmd, root)
        assert "Traceback" not in done.stderr, (cmd, done.stderr)
        assert _snapshot(victim) == before, (cmd, done.stdout, done.stderr)
    plain = _run(["dvc", "repro"], root)
    assert plain.returncode != 0 and "name '../../victim' is not allowed" in plain.stdout + plain.stderr
    assert not (root / "data" / "victim").exists()


def test_no_dataset_name_reaches_a_shell(project):
    root, source = project
    name = "x';touch PWNED;'"
    (root / "data" / name / "raw").mkdir(parents=True)  # the stage's dep folder present: DVC would run its cmd
    _with_dataset(root, source, name)
    for cmd in (["dvc", "repro", "-s", f"prepare@{name}"], ["dvc", "repro", "prepare"], ["dvc", "repro"]):
        _run(cmd, root)
    assert not list(root.rglob("PWNED")) and not (root.parent / "PWNED").exists()


def test_a_reserved_name_is_refused_and_the_others_still_build(project):
    root, source = project
    _with_dataset(root, source, "sources")
    listed = _run(["dvc", "stage", "list"], root)  # DVC still loads the project (no overlapping outputs)
    assert listed.returncode == 0 and "download@tiny" in listed.stdout, listed.stderr
    done = _run(["dvc", "repro"], root)
    assert done.returncode != 0 and "name 'sources' is reserved" in done.stdout + done.stderr


def test_an_added_dataset_updates_the_list_stops_once_then_builds(project, tmp_path):
    root, source = project
    params = tiny_params({"data": {"name": "tiny", "url": str(source)}})
    params["datasets"]["second"] = {"url": str(source)}
    (root / "params.yaml").write_text(params_text(params))  # a hand edit: the list not synced
    first = _run(["dvc", "repro", "download"], root)
    assert "added ['second']" in first.stdout + first.stderr and first.returncode != 0
    assert read_list(root / "data" / "datasets.yaml") == ["tiny", "second"]
    again = _run(["dvc", "repro", "download"], root)
    assert again.returncode == 0 and "Running stage 'download@second'" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("url", ["https://example.invalid/..", "https://example.invalid/data/", "http://h/."])
def test_a_mirror_url_without_a_file_name_is_refused(tmp_path, monkeypatch, url):
    mirror = tmp_path / "shared" / "mirror"
    make_dataset(mirror / "inside")
    (tmp_path / "shared" / "secret.txt").write_text("the mirror's parent")
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    with pytest.raises(DownloadError, match="no file name to look up in PIPELINE_DATA_MIRROR"):
        download(data_config(url), tmp_path / "data" / "raw")
    with pytest.raises(DownloadError, match="no file name"):
        source_fingerprint(url)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_a_mirror_entry_that_is_a_folder_or_a_link_out_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    make_dataset(mirror / "folder.zip")  # a folder named like an archive
    (mirror / "out.zip").symlink_to(zip_dir(make_dataset(tmp_path / "elsewhere"), tmp_path / "elsewhere.zip"))
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    with pytest.raises(DownloadError, match="is a folder, not a file"):
        download(data_config("https://h/folder.zip"), tmp_path / "data" / "raw")
    with pytest.raises(DownloadError, match="is a link out of the mirror, not a file"):
        download(data_config("https://h/out.zip"), tmp_path / "data" / "raw")


def test_a_home_folder_url_copies_image_files_only_never_hidden_ones(tmp_path):
    home = tmp_path / "home"
    make_dataset(home / "photos", per_class=2, layout="flat")
    for rel in (".ssh/id_rsa", ".netrc", "photos/cats/.secret.jpg", "notes.txt", "photos/dogs/readme.md"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("private")
    (home / ".cache" / "pics").mkdir(parents=True)
    (home / ".cache" / "pics" / "a.jpg").write_bytes(b"hidden folder")
    info, _ = download(data_config(str(home)), tmp_path / "data" / "raw")
    raw = tmp_path / "data" / "raw"
    copied = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file() and p.name != MARKER)
    assert copied and all(p.endswith(".jpg") and not any(s.startswith(".") for s in p.split("/")) for p in copied)
    reasons = {s.path: s.reason for s in info.skipped or []}
    assert reasons == {
        ".cache": "hidden (never copied)",
        ".netrc": "hidden (never copied)",
        ".ssh": "hidden (never copied)",
        "notes.txt": "not an image file (.txt)",
        "photos/cats/.secret.jpg": "hidden (never copied)",
        "photos/dogs/readme.md": "not an image file (.md)",
    }


@pytest.mark.parametrize("kind", ["chardev", "fifo", "file-url"])
def test_a_device_or_fifo_url_is_refused_at_once_saying_what_it_is(tmp_path, kind):
    if kind == "fifo":
        os.mkfifo(url := str(tmp_path / "pipe.zip"))
        what = "is a FIFO"
    else:
        url, what = ("/dev/zero" if kind == "chardev" else "file:///dev/urandom"), "is a character device"
    result: dict = {}

    def attempt():  # a read of the FIFO or device would block or never end: a thread lets the test see that
        for name, call in (("source", lambda: source_fingerprint(url)), ("download", lambda: _download(url, tmp_path))):
            try:
                call()
            except DownloadError as err:
                result[name] = str(err)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "hung reading the source"
    for name in ("source", "download"):
        assert what in result[name] and "not a regular file or folder" in result[name], result


def _download(url, tmp_path):
    download(data_config(url), tmp_path / "data" / "raw", attempts=1)


def test_the_download_cli_refuses_a_device_in_one_line(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_params({"data": {"name": "tiny", "url": "/dev/zero"}}))
    done = _run(
        [sys.executable, "-m", "pipeline.stages.download", "--out", "raw", "--info", "i.json", "--execution", "x.json"],
        tmp_path,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: data.url /dev/zero: /dev/zero is a character device" in done.stderr


def test_names_yaml_would_read_as_numbers_or_booleans_stay_text(project):
    root, source = project
    params = tiny_params({"data": {"name": "tiny", "url": str(source)}})
    for name in ("1e5", "true", "010"):  # quoted keys in params.yaml: text there, a float/bool/int if unquoted
        params["datasets"][name] = {"url": str(source)}
    write_params(root / "params.yaml", params)
    listed = _run(["dvc", "stage", "list"], root).stdout
    assert {"download@1e5", "download@true", "download@010"} <= {line.split()[0] for line in listed.splitlines()}
    assert "data/1e5/raw" in listed and "100000" not in listed and "True" not in listed, listed
