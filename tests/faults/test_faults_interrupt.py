"""Fault suite, interruptions and concurrent runs, with real processes: kill -9 mid-extraction and mid-training,
then rerun; kill -9 a `dvc repro`, then repro again; two `dvc repro` at once. Never a partial output, a rerun
equals a clean run, and `dvc status` is clean afterwards."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.config import load_config, load_params
from pipeline.files import JSON, atomic_path, read_json
from pipeline.layout import SPLITS
from pipeline.model.features import load_features
from pipeline.stages.extract import extract
from pipeline.stages.prepare import prepare
from pipeline.stages.train_dense import train_dense
from tests.helpers import REPO
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env, kill_when, start

# The extract CLI with a seeded Keras: identical features run to run even if the tiny params use random weights.
SEEDED_EXTRACT = (
    "import keras; keras.utils.set_random_seed(0)\n"
    "from pipeline.stages.extract import main; from pipeline.cli import run_cli; run_cli(main)"
)
PER_CLASS = 150  # 300 images at batch 4: extraction takes a few seconds, long enough to be killed mid-way


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """300 images prepared, and their features from a clean (uninterrupted, seeded) run in clean/."""
    tmp = tmp_path_factory.mktemp("interrupt")
    write_params(tmp / "params.yaml", tiny_params({"extract": {"batch_size": 4}}))
    cfg = load_config(tmp / "params.yaml")
    make_dataset(tmp / "raw", per_class=PER_CLASS, layout="flat")
    prepare(tmp / "raw", tmp / "prepared", tmp / "prepare.json", cfg.split)
    keras.utils.set_random_seed(0)
    extract(tmp / "prepared" / "manifest.csv", tmp / "clean", cfg.backbone, cfg.extract)
    return tmp


def _extract(tmp, out):
    return [
        sys.executable,
        "-c",
        SEEDED_EXTRACT,
        "--params",
        str(tmp / "params.yaml"),
        "--manifest",
        str(tmp / "prepared" / "manifest.csv"),
        "--out",
        str(out),
        "--execution",
        str(tmp / "execution" / f"{out.name}.json"),
    ]


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp-out-{dead.stdout.strip()}-abcd_123"
    live = tmp_path / f".tmp-out-{os.getpid()}-abcd_123"  # this very process
    other = tmp_path / f".tmp-out.csv-{dead.stdout.strip()}-abcd_123"  # another target's: not ours to judge
    for d in (stale, live, other):
        d.mkdir()
    with atomic_path(tmp_path / "out", JSON) as tmp:
        tmp.write_text("done")
    assert _temps(tmp_path) == sorted([live.name, other.name])
    assert (tmp_path / "out").read_text() == "done"


def test_kill_during_extract_then_rerun_equals_a_clean_run(prepared):
    proc = start(_extract(prepared, prepared / "features"), prepared, prepared / "killed.log")
    assert kill_when(proc, lambda: any(prepared.glob(".tmp-features-*/features/train.npy"))), "ended unkilled"
    assert not (prepared / "features").exists()  # nothing partial where the next stage would look
    assert _temps(prepared)  # the killed run's half-written features
    assert not (prepared / "execution" / "features.json").exists()  # nor a record of a run that never finished

    subprocess.run(_extract(prepared, prepared / "features"), env=env(), check=True, capture_output=True)
    assert not _temps(prepared)  # the rerun cleared them
    clean, rerun = prepared / "clean", prepared / "features"
    assert sorted(p.name for p in rerun.iterdir()) == sorted(p.name for p in clean.iterdir())
    for file in clean.iterdir():  # meta.json too: the speed went to the execution record
        assert (rerun / file.name).read_bytes() == file.read_bytes(), file.name
    assert set(read_json(prepared / "execution" / "features.json")["images_per_second"]) == set(SPLITS)


def test_kill_during_training_leaves_no_model_or_a_complete_one(prepared):
    long = write_params(prepared / "long.yaml", tiny_params({"dense": {"epochs": 10000, "patience": None}}))
    log, out, execution = prepared / "train.log", prepared / "dense", prepared / "execution" / "train_dense.json"
    proc = start(
        [
            sys.executable,
            "-m",
            "pipeline.stages.train_dense",
            "--params",
            str(long),
            "--features",
            str(prepared / "clean"),
            "--out",
            str(out),
            "--execution",
            str(execution),
        ],
        prepared,
        log,
    )
    assert kill_when(proc, lambda: "Epoch 3/" in log.read_text()), "training ended unkilled"
    model = out / "model.keras"
    if model.exists():  # only a complete, loadable model may ever be there
        keras.models.load_model(model)
    assert not execution.exists()  # written when the stage succeeds, never by a killed run

    train_dense(prepared / "clean", out, load_config(prepared / "params.yaml").dense)  # the rerun
    x, _ = load_features(prepared / "clean", "test")
    assert keras.models.load_model(model).predict(x, verbose=0).shape == (len(x), 1)
    assert read_json(out / "summary.json")["epochs_run"] >= 1
    assert not _temps(out)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project (code, dvc.yaml, params.yaml with tiny values) with DVC initialised, no git."""
    tmp = tmp_path_factory.mktemp("dvc")
    archive = zip_dir(make_dataset(tmp / "src" / "synthetic", per_class=PER_CLASS, layout="flat"), tmp / "syn.zip")
    proj = tmp / "project"
    shutil.copytree(REPO / "pipeline", proj / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", proj)
    write_params(proj / "params.yaml", tiny_params({"extract": {"batch_size": 4}, "data": {"url": str(archive)}}))
    _dvc(proj, "init", "--no-scm", "-q")
    return proj


def _dvc(proj, *args, check=True):
    proc = subprocess.run(["dvc", *args], cwd=proj, env=env(), capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _assert_features_intact(proj):
    """dvc status clean (outputs match dvc.lock), every array loads with the counts meta.json states."""
    assert "Data and pipelines are up to date" in _dvc(proj, "status", "extract").stdout
    features = proj / "data" / "synthetic" / "features"
    meta = read_json(features / "meta.json")
    for split in SPLITS:
        x, y = load_features(features, split)
        assert x.shape == (meta["counts"][split], *meta["feature_shape"]) and len(y) == len(x)
        assert np.isfinite(x).all()
    assert not _temps(features.parent)


def test_kill_dvc_repro_during_extract_then_repro_completes(project):
    data = project / "data" / "synthetic"
    proc = start(["dvc", "repro", "extract"], project, project.parent / "killed.log")
    assert kill_when(proc, lambda: any(data.glob(".tmp-features-*/features/train.npy"))), "repro ended unkilled"
    assert "Running stage 'extract@synthetic'" in (project.parent / "killed.log").read_text()
    assert not (data / "features").exists()
    assert "up to date" not in _dvc(project, "status", "extract").stdout  # DVC knows extract did not finish

    out = _dvc(project, "repro", "extract").stdout
    assert "Stage 'prepare@synthetic' didn't change" in out and "Running stage 'extract@synthetic'" in out
    _assert_features_intact(project)


def test_two_dvc_repro_at_once_one_waits_or_fails_on_the_lock(project):
    params = load_params(project / "params.yaml")
    params["extract"]["batch_size"] = 8  # so extract must run again
    write_params(project / "params.yaml", params)
    logs = [project.parent / f"concurrent{i}.log" for i in (1, 2)]
    procs = [start(["dvc", "repro", "extract"], project, log) for log in logs]
    codes = [p.wait(timeout=300) for p in procs]
    texts = [log.read_text() for log in logs]
    assert 0 in codes, texts
    for code, text in zip(codes, texts):
        assert code == 0 or ("is busy, it is being blocked by" in text or "Unable to acquire lock" in text), text
    _assert_features_intact(project)
    assert "batch_size: 8" in (project / "dvc.lock").read_text()
