"""Outputs replace only what they wrote: every CLI refuses, before any work and naming the path, an output path
that holds something else (the project root, data/, a folder of photos, another writer's folder, a file of
another kind, a link to one); a rerun still replaces its own output. Real files and real CLI processes."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.files import (
    JSON,
    MARKER,
    OutputPathError,
    atomic_path,
    check_output,
    claim_folder,
    folder_of,
    write_csv,
    write_json,
)
from pipeline.layout import PARAMS_FILE, DatasetLayout
from tests.helpers import REPO
from tests.helpers.images import make_image
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import git


def _cli(cwd, module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env(), capture_output=True)


def _refused(done, path):
    err = done.stderr.decode()
    assert done.returncode == 2 and "error:" in err and f"{path}" in err and "refusing" in err, err[-2000:]
    assert not done.stdout  # nothing done: no prediction printed, no record written


def _state(root):
    """Every entry under `root` (links not followed): its mode, mtime and bytes."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            data = Path(path).read_bytes() if os.path.isfile(path) and not os.path.islink(path) else None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, data)
    return out


@pytest.fixture
def project(tmp_path, synthetic_zip):
    """A project as a user has it: git, a DVC cache, an MLflow store, code, params.yaml and its dataset list."""
    root = tmp_path / "proj"
    write_params(root / PARAMS_FILE, tiny_params({"data": {"name": "pets", "url": str(synthetic_zip)}}))
    git(root, "init", "-q")
    (root / ".dvc" / "cache" / "ab").mkdir(parents=True)
    (root / ".dvc" / "cache" / "ab" / "cdef").write_bytes(b"cached model")
    (root / "mlflow.db").write_bytes(b"SQLite format 3\0 runs")
    (root / "pipeline").mkdir()
    (root / "pipeline" / "code.py").write_text("print('mine')\n")
    for i in range(2):
        make_image(root / "photos" / f"p{i}.jpg", 0, i)
    assert _cli(root, "pipeline.datasets").returncode == 0
    return root


def test_source_refuses_the_project_root_and_data_and_replaces_its_own_folder(project):
    before = _state(project)
    for out in (project, "data"):  # `--out "$PWD"`: .git, the DVC cache, mlflow.db and the code were deleted
        _refused(_cli(project, "pipeline.stages.source", "--out", out), out)
    assert _state(project) == before
    for _ in range(2):  # its own folder: written, then replaced
        assert _cli(project, "pipeline.stages.source", "--out", "data/sources").returncode == 0
    assert (project / "data" / "sources" / MARKER).read_text() == "source\n"


def test_download_and_prepare_refuse_what_they_did_not_write(project):
    d = DatasetLayout.of("pets", project)
    run = ("pipeline.stages.download", "--out", d.raw, "--info", d.download_info, "--execution", "x.json")
    before, photos = _state(project), _state(project / "photos")
    for flag, path in [("--out", "photos"), ("--info", PARAMS_FILE), ("--execution", "mlflow.db")]:
        args = list(run)
        args[args.index(flag) + 1] = path
        _refused(_cli(project, *args), path)
    assert _state(project) == before
    assert _cli(project, *run).returncode == 0
    assert (d.raw / MARKER).read_text() == "download\n"
    prep = ("pipeline.stages.prepare", "--raw", d.raw, "--out", d.prepared, "--summary", d.prepare_summary)
    for out in ("photos", d.raw):  # a folder of photos; download's folder (its marker names another writer)
        _refused(_cli(project, *prep[:4], out, *prep[5:]), out)
    _refused(_cli(project, *prep[:6], "photos/p0.jpg"), "photos/p0.jpg")
    assert _state(project / "photos") == photos
    for _ in range(2):
        assert _cli(project, *prep).returncode == 0
    assert MARKER not in (d.prepared / "quarantine.csv").read_text()  # download's marker is no dataset file


def test_predict_csv_given_a_shell_glob_never_overwrites_a_photo(tiny_project, tmp_path):
    photos = sorted(tiny_project.layout.raw.rglob("cats/*.jpg"))[:2]
    for p in photos:
        shutil.copyfile(p, tmp_path / p.name)
    shots = [tmp_path / p.name for p in photos]
    before = _state(tmp_path)
    # `predict photos/*.jpg --csv /dir/*.jpg`, the glob matching one photo: it became the CSV's path
    _refused(_cli(tiny_project.root, "pipeline.predict", *shots, "--csv", shots[1]), shots[1])
    assert _state(tmp_path) == before
    csv = tmp_path / "predictions.csv"
    for _ in range(2):  # its own CSV: written, then replaced
        assert _cli(tiny_project.root, "pipeline.predict", *shots, "--csv", csv).returncode == 0
    assert csv.read_text().startswith("source,class,probability,error,prob_cats,prob_dogs\n")


def test_training_and_evaluation_write_only_their_own_files_into_a_folder(tiny_project, tmp_path):
    notes = tmp_path / "notes"  # someone's folder that happens to hold the names the stages write
    notes.mkdir()
    (notes / "summary.json").write_text('{"my": "notes"}')
    (notes / "metrics.json").write_text("[1,2]\n")
    d = tiny_project.layout
    before = _state(tmp_path)
    train = ("pipeline.stages.train_dense", "--features", d.features, "--out", notes, "--execution", "e.json")
    _refused(_cli(tiny_project.root, *train), notes / "summary.json")
    evaluate = ("pipeline.stages.evaluate", "--dense", d.model_dir("dense"), "--finetune", d.model_dir("finetune"))
    _refused(_cli(tiny_project.root, *evaluate, "--images", d.raw, "--out", notes), notes / "metrics.json")
    assert _state(tmp_path) == before


def test_offline_plots_refuse_evaluate_s_reports_folder(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    write_csv(tmp_path / "data" / "pets" / "history.csv", ["epoch", "loss"], [[1, 0.5], [2, 0.4]])
    (tmp_path / "dvc.yaml").write_text("plots:\n  - data/pets/history.csv:\n      x: epoch\n      y: loss\n")
    write_params(tmp_path / PARAMS_FILE, tiny_params({"data": {"name": "pets", "url": "unused.zip"}}))
    reports = tmp_path / "data" / "pets" / "reports"
    write_json(reports / "metrics.json", {"dense": {"accuracy": 0.9}})  # cache: false, no DVC copy to restore
    write_json(reports / "mlflow.json", {"parent_run_id": "abc"})
    before = _state(tmp_path)
    _refused(_cli(tmp_path, "pipeline.evaluation.offline_plots", "--out", reports), reports)
    assert _state(tmp_path) == before
    for _ in range(2):
        assert _cli(tmp_path, "pipeline.evaluation.offline_plots", "--out", reports / "offline").returncode == 0
    assert (reports / "offline" / MARKER).read_text() == "offline_plots\n"


def test_what_a_write_may_replace(tmp_path):
    def refused(path, kind):
        with pytest.raises(OutputPathError, match="refusing"):
            check_output(path, kind)

    mine, prep = tmp_path / "mine.json", folder_of("prepare")
    for _ in range(2):  # its own JSON, its own folder: replaced
        write_json(mine, {"b": 1, "a": [1.5, None, "é"]})
        with atomic_path(tmp_path / "out", prep) as tmp:
            tmp.mkdir()
    (tmp_path / "theirs.json").write_text('{"a":1}')  # valid JSON, but not as write_json writes it
    os.symlink(tmp_path / "theirs.json", tmp_path / "link.json")
    os.symlink(tmp_path / "out", tmp_path / "link")
    for path, kind in [
        ("theirs.json", JSON),
        ("link.json", JSON),  # a link is judged by what it points to
        ("link", prep),  # a folder cannot replace a link
        ("out", folder_of("extract")),  # another writer's folder
        ("theirs.json/x.json", JSON),  # below a file
        (".", prep),
        ("out/..", prep),
    ]:
        refused(tmp_path / path, kind)
    (tmp_path / "empty.json").touch()
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.json")
    os.symlink(mine, tmp_path / "mine-link.json")
    for path, kind in [("empty.json", JSON), ("empty", prep), ("dangling.json", JSON), ("mine-link.json", JSON)]:
        check_output(tmp_path / path, kind)
    cache = folder_of("a benchmark")  # a folder written into over several runs, not replaced
    for _ in range(2):
        claim_folder(tmp_path / "cache", cache)
    with pytest.raises(OutputPathError, match="a benchmark did not write"):
        claim_folder(tmp_path / "out", cache)  # prepare's


def test_a_folder_output_restored_by_dvc_checkout_is_still_its_writer_s(tmp_path):
    def dvc(*args):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, check=True, capture_output=True)

    git(tmp_path, "init", "-q")
    dvc("init", "-q")
    with atomic_path(tmp_path / "features", folder_of("extract")) as tmp:
        tmp.mkdir()
        (tmp / "train.npy").write_bytes(b"x")
    dvc("add", "-q", "features")
    shutil.rmtree(tmp_path / "features")
    dvc("checkout", "-q")
    assert check_output(tmp_path / "features", folder_of("extract"))  # the marker came back with the folder


OUTPUT_FLAGS = {"--out", "--info", "--summary", "--execution", "--csv", "--checkpoint"}
INPUTS = {("pipeline/tracking/sweep.py", "--summary")}  # a trial's summary.json, read


def test_every_cli_output_argument_is_checked_at_parsing():
    unchecked = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "add_argument"):
                continue
            flag = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
            kind = next((k.value for k in call.keywords if k.arg == "type"), None)
            checked = isinstance(kind, ast.Call) and getattr(kind.func, "id", None) == "output"
            rel = path.relative_to(REPO).as_posix()
            if flag in OUTPUT_FLAGS and not checked and (rel, flag) not in INPUTS:
                unchecked.append(f"{rel}: {flag}")
    assert unchecked == []
