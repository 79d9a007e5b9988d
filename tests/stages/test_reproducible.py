"""The same inputs give byte-identical outputs: prepare -> extract -> train_dense -> train_finetune -> evaluate,
run twice in two folders, each run in a fresh process with the relative paths DVC gives the stages. Models
included (Keras stamps its .keras archives: pipeline/model/training.py's save_model must undo that), so DVC
gets the same hashes on any machine and can take outputs from its run-cache or a remote."""

import subprocess
import sys

from pipeline.layout import DatasetLayout
from tests.helpers.compare import folder_differences
from tests.helpers.faults import rgba_png
from tests.helpers.images import make_dataset
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env

NAME = "twice"
RUN = """
import sys
from pathlib import Path
from pipeline.layout import DatasetLayout
from tests.helpers.pipeline import run_stages
run_stages(DatasetLayout.of(sys.argv[1]), Path("params.yaml"), first="prepare")
"""
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


def _project(root):
    data = DatasetLayout.of(NAME, root)
    make_dataset(data.raw, per_class=15, layout="flat")
    rgba_png(data.raw / "cats" / "alpha.png")  # converted by prepare: its copy must be reproducible too
    write_params(root / "params.yaml", tiny_params({"data": {"name": NAME, "url": "unused"}}))
    return root


def test_two_runs_write_byte_identical_outputs(tmp_path):
    projects = [_project(tmp_path / run) for run in ("first", "second")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, NAME],
            cwd=p,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in projects
    ]
    logs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-5000:]
    first, second = (DatasetLayout.of(NAME, p).root for p in projects)
    written = {p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file()}
    assert written >= OUTPUTS
    assert any(p.name.endswith(".png") for p in (first / "prepared" / "converted").iterdir())
    # raw/ is the input; execution/ holds what each run measured (seconds, img/s), different by nature
    differences = folder_differences(first, second, skip=("raw", "execution"))
    assert not differences, "\n".join(differences)
