"""Running the pipeline's stages in this process, exactly as dvc.yaml's commands run them, on tiny data."""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import Config, parse_config
from pipeline.layout import LOCK_FILE, PARAMS_FILE, DatasetLayout
from tests.helpers import REPO
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.project import git, lock_of
from tests.helpers.structure import STAGE_DATA

STAGES = ("download", "prepare", "extract", "train_dense", "train_finetune", "evaluate")  # track aside


def stage_command(stage: str, layout: DatasetLayout) -> tuple[str, list[str]]:
    """The module and arguments of `stage`'s command in dvc.yaml for the dataset `layout.root.name`, its
    paths moved under `layout.root`."""
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["do"]["cmd"]
    python, flag, module, *args = shlex.split(cmd)
    assert (python, flag) == ("python", "-m"), cmd
    args = [str(layout.root) + a[len(STAGE_DATA) :] if a.startswith(STAGE_DATA) else a for a in args]
    return module, [a.replace("${item}", layout.root.name) for a in args]


def run_stage(stage: str, layout: DatasetLayout, params: Path) -> None:
    """`stage`'s CLI (its main()) with dvc.yaml's arguments and `params`, in this process."""
    module, args = stage_command(stage, layout)
    importlib.import_module(module).main(["--params", str(params), *args])


def run_stages(layout: DatasetLayout, params: Path, first: str = "extract", last: str = "evaluate") -> None:
    """The stages from `first` to `last` in pipeline order, each as run_stage runs it."""
    for stage in STAGES[STAGES.index(first) : STAGES.index(last) + 1]:
        run_stage(stage, layout, params)


@dataclass(frozen=True)
class TinyProject:
    """The tiny two-class pipeline's outputs under root/data/<name>, beside its params.yaml and a dvc.lock
    committed to git (what the track stage reads), and the archive it was downloaded from."""

    root: Path
    layout: DatasetLayout
    params: dict
    archive: Path
    commit: str

    @property
    def cfg(self) -> Config:
        return parse_config(self.params)

    @property
    def params_file(self) -> Path:
        return self.root / PARAMS_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE


def build_tiny_project(root: Path, name: str = "tiny") -> TinyProject:
    """2 classes x 20 images (the archive's train/validation layout), download to evaluate."""
    archive = zip_dir(make_dataset(root / "src" / name), root / f"{name}.zip")
    params = tiny_params({"data": {"name": name, "url": str(archive)}})
    write_params(root / PARAMS_FILE, params)
    layout = DatasetLayout.of(name, root)
    run_stages(layout, root / PARAMS_FILE, first="download")
    (root / LOCK_FILE).write_text(yaml.safe_dump(lock_of(name)))
    git(root, "init", "-q")
    git(root, "add", str(LOCK_FILE), str(PARAMS_FILE))
    git(root, "commit", "-qm", "tiny")
    return TinyProject(root, layout, params, archive, git(root, "rev-parse", "HEAD"))
