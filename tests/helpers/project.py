"""Copies of the project, git in them, and the dvc.lock the tracking tests read."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.layout import DATASET_LIST
from tests.helpers import REPO


def lock_of(name: str) -> dict:
    """A dvc.lock of dataset `name` beside another one (`stage@dataset` entries) and the plain `source` stage,
    for the DVC tags of MLflow runs."""
    return {
        "schema": "2.0",
        "stages": {
            "source": {"cmd": "python -m pipeline.stages.source", "outs": [{"md5": "s"}]},
            f"prepare@{name}": {"cmd": f"python -m pipeline.stages.prepare --dataset {name}", "outs": [{"md5": "a"}]},
            f"train_dense@{name}": {"cmd": f"python -m pipeline.stages.train_dense --dataset {name}"},
            "train_dense@other": {"cmd": "python -m pipeline.stages.train_dense --dataset other"},
        },
    }


def git(cwd: Path, *args: str) -> str:
    """`git <args>` in `cwd` with a throwaway identity; its stdout."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def copy_repo(dest: Path) -> Path:
    """The files git would see (tracked and new), without the real dataset's outputs and dvc.lock (with the checked
    dataset list dvc.yaml loops over)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        outputs = rel.startswith("data/") and rel != DATASET_LIST.as_posix()
        if (REPO / rel).is_file() and not outputs and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def folder_project(tmp: Path) -> tuple[Path, Path]:
    """A copy of the repo under `tmp` as a git + DVC project with one dataset, `tiny`, a local folder of synthetic
    images; (project root, that folder)."""
    from tests.helpers.images import make_dataset
    from tests.helpers.params import tiny_params, write_params

    root = copy_repo(tmp / "proj")
    source = make_dataset(tmp / "photos")
    write_params(root / "params.yaml", tiny_params({"data": {"name": "tiny", "url": str(source)}}))
    git(root, "init", "-q")
    return root, source
