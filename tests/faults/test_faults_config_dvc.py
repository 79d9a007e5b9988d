"""Fault suite, params and inputs through DVC and the stage CLIs: a bad dataset name stops `dvc repro` before any
output is touched, duplicate keys are refused, a missing input is one line, a changed local dataset re-runs
download, split fractions that leave no training image and ambiguous split-like class folders are named."""

import subprocess
import sys

import pytest

from pipeline.contracts import PrepareSummary
from pipeline.data.dataset import DatasetError
from pipeline.stages.prepare import prepare
from tests.helpers.images import make_dataset, make_image
from tests.helpers.params import params_text, tiny_config, tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import folder_project


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def dvc_project(tmp_path):
    return folder_project(tmp_path)


def test_bad_data_name_stops_dvc_repro_before_any_output_is_touched(dvc_project, tmp_path):
    root, source = dvc_project
    victim = tmp_path / "victim"  # where data/../../victim/raw points from the project
    (victim / "raw").mkdir(parents=True)
    (victim / "raw" / "precious.txt").write_text("keep me")
    for name in ("../../victim", "my photos", "v1.2"):  # a dot: DVC would read datasets.v1.2 as a key path
        write_params(root / "params.yaml", tiny_params({"data": {"name": name, "url": str(source)}}))
        done = _run(["dvc", "repro"], root)
        assert done.returncode != 0
        assert f"datasets: name {name!r} is not allowed" in done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "Running stage 'download" not in done.stdout
    assert (victim / "raw" / "precious.txt").read_text() == "keep me"


def test_a_changed_local_folder_reruns_download(dvc_project):
    root, source = dvc_project
    assert "Running stage 'download@tiny'" in _run(["dvc", "repro", "download"], root).stdout  # every download@
    assert "Stage 'download@tiny' didn't change" in _run(["dvc", "repro", "download"], root).stdout
    make_image(source / "train" / "cats" / "cats.new.jpg", 0, 99)
    again = _run(["dvc", "repro", "download"], root)
    assert "Running stage 'download@tiny'" in again.stdout, again.stdout + again.stderr
    assert (root / "data" / "tiny" / "raw" / "train" / "cats" / "cats.new.jpg").is_file()


def test_duplicate_yaml_keys_are_refused(tmp_path):
    text = params_text(tiny_params()) + "dense:\n  epochs: 3\n"  # a second, partial dense section
    (tmp_path / "dup.yaml").write_text(text)
    done = _run(
        [
            sys.executable,
            "-m",
            "pipeline.stages.prepare",
            "--params",
            "dup.yaml",
            "--raw",
            "r",
            "--out",
            "o",
            "--summary",
            "s.json",
        ],
        tmp_path,
    )
    assert done.returncode == 2 and "duplicate key 'dense'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "stage, args, missing",
    [
        ("extract", ["--manifest", "nope/manifest.csv", "--out", "f", "--execution", "x.json"], "nope/manifest.csv"),
        ("train_dense", ["--features", "nofeatures", "--out", "d", "--execution", "x.json"], "nofeatures"),
        ("prepare", ["--raw", "noraw", "--out", "p", "--summary", "s.json"], "noraw"),
    ],
)
def test_a_missing_input_is_one_line_and_exit_2(tmp_path, stage, args, missing):
    write_params(tmp_path / "params.yaml", tiny_params())
    done = _run([sys.executable, "-m", f"pipeline.stages.{stage}", *args], tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and missing in errors[0], done.stderr


def test_split_fractions_that_leave_no_train_image_are_named(tmp_path):
    raw = make_dataset(tmp_path / "raw", per_class=2, layout="flat")
    cfg = tiny_config({"split": {"validation": 0.49, "test": 0.49}}).split
    with pytest.raises(DatasetError, match="leave no train image"):
        prepare(raw, tmp_path / "prepared", tmp_path / "prepare.json", cfg, processes=1)


def test_class_folders_named_like_splits_are_read_as_classes_and_said(tmp_path):
    raw = tmp_path / "raw"
    for c, name in enumerate(("valid", "test")):  # a flat dataset whose classes are called valid and test
        for i in range(12):
            make_image(raw / name / f"{i}.jpg", c, i)
    summary = prepare(raw, tmp_path / "prepared", tmp_path / "prepare.json", tiny_config().split, processes=1)
    assert summary.classes == ["test", "valid"]
    assert "read as classes" in summary.layout_notes[0]
    assert PrepareSummary.load(tmp_path / "prepare.json").layout_notes == summary.layout_notes


def test_a_class_folder_beside_split_folders_is_said(tmp_path):
    raw = make_dataset(tmp_path / "raw", per_class=12)
    make_image(raw / "birds" / "0.jpg", 2, 0)  # beside train/ and validation/
    summary = prepare(raw, tmp_path / "prepared", tmp_path / "prepare.json", tiny_config().split, processes=1)
    assert "['birds']" in summary.layout_notes[0] and summary.quarantine_reasons["outside any class folder"] == 1
