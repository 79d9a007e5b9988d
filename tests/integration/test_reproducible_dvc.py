"""`dvc repro` of the whole tiny pipeline in two copies of the project: the same dvc.lock (every stage's deps,
params and outs hashes), only the track stage's record of its MLflow run ids differing, and the same bytes
in every output, models included (Keras stamps its .keras archives: pipeline/model/training.py's save_model
must undo that) and the copy of an image prepare converted. What lets DVC reuse outputs from its run-cache or a
remote on any machine."""

import shutil
import subprocess

import yaml

from pipeline.layout import DatasetLayout, stage_id
from tests.helpers import REPO
from tests.helpers.compare import folder_differences
from tests.helpers.faults import rgba_png
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.structure import dvc_stage_names

NAME = "repro"
# What the runs must produce (at least); everything they write is compared.
OUTPUTS = {
    "prepare.json",
    "prepared/manifest.csv",
    "prepared/quarantine.csv",
    "features/meta.json",
    "features/train.npy",
    "features/train.mirror.npy",
    "features/test.mirror.npy",
    "models/dense/model.keras",
    "models/dense/summary.json",
    "models/dense/history.csv",
    "models/finetune/model.keras",
    "models/finetune/summary.json",
    "models/finetune/history.csv",
    "reports/metrics.json",
    "reports/report.html",
    "reports/plots/roc.png",
    "reports/plots/gradcam_finetune.png",
}


def _project(root, archive):
    """pipeline/, dvc.yaml and tiny params in `root`, DVC initialised without git."""
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    write_params(root / "params.yaml", tiny_params({"data": {"name": NAME, "url": str(archive)}}))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=env(), check=True)
    return root


def _without_track_outs(lock):
    lock["stages"][stage_id("track", NAME)].pop("outs")  # mlflow.json: run ids and versions, new on every run
    return lock


def test_two_dvc_repros_give_the_same_dvc_lock_and_outputs(tmp_path):
    source = make_dataset(tmp_path / "src" / NAME, per_class=15)
    rgba_png(source / "train" / "cats" / "alpha.png")  # converted by prepare: its copy must be reproducible too
    archive = zip_dir(source, tmp_path / f"{NAME}.zip")
    projects = [_project(tmp_path / run, archive) for run in ("first", "second")]
    environ = env()
    environ.pop("MLFLOW_TRACKING_URI", None)  # track logs into each copy's own mlflow.db
    procs = [
        subprocess.Popen(
            ["dvc", "repro"], cwd=p, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for p in projects
    ]
    logs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-5000:]
    locks = [yaml.safe_load((p / "dvc.lock").read_text()) for p in projects]
    assert set(locks[0]["stages"]) == dvc_stage_names([NAME])  # every stage ran and is locked
    outs = [
        {f"{s}: {o['path']}": o["md5"] for s, e in lock["stages"].items() for o in e.get("outs", [])} for lock in locks
    ]
    track = stage_id("track", NAME)
    differing = sorted(k for k in outs[0] if outs[0][k] != outs[1].get(k) and not k.startswith(f"{track}:"))
    first, second = (DatasetLayout.of(NAME, p).root for p in projects)
    written = {p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()}
    assert written >= OUTPUTS
    assert any(p.name.endswith(".png") for p in (first / "prepared" / "converted").iterdir())
    # raw/ is the input; execution/ holds what each run measured (seconds, img/s), different by nature
    details = folder_differences(first, second, skip=("raw", "execution"))
    assert not differing, f"dvc.lock md5 differs for {differing}:\n" + "\n".join(details)
    assert _without_track_outs(locks[0]) == _without_track_outs(locks[1])
    assert all(d.startswith("reports/mlflow.json") for d in details), "\n".join(details)
