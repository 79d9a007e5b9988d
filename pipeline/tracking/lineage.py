"""What ties a logged run to what produced it: the git commit, the DVC stage hashes, the Prefect flow run, and
the exact package versions a logged model needs."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from pipeline.files import sha256_json
from pipeline.layout import stage_parts

PREFECT_ENV = ("PREFECT__FLOW_RUN_ID", "PIPELINE_PREFECT_FLOW_RUN_ID")  # set by Prefect workers / by us
_TAG_UNSAFE = re.compile(r"[^\w./ :-]")  # MLflow's allowed key characters
PINNED_MODULES = ("keras", "tensorflow", "numpy", "h5py")  # what loading a saved .keras model needs
EXECUTION_TAG = "pipeline.execution"
COMMIT_TAG = "mlflow.source.git.commit"
EXP_NAME_TAG = "dvc.exp.name"
# What `dvc exp run` sets for every stage command (dvc/repo/experiments/queue/base.py), under the tag it becomes.
DVC_EXP_ENV = {EXP_NAME_TAG: "DVC_EXP_NAME", "dvc.exp.baseline_rev": "DVC_EXP_BASELINE_REV"}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lock_tags(lock: Path, dataset: str | None = None) -> dict[str, str]:
    """`dvc.stage.<stage>.md5`: md5 of the stage's dvc.lock entry (cmd, dep/param/out hashes) as canonical JSON,
    for `dataset`'s stages (`<stage>@<dataset>`; None: the stages that are not per dataset).

    It changes whenever anything the stage saw or wrote changes; dvc.lock itself is logged as an artifact.
    Other datasets' stages are left out (adding a dataset changes nothing of this one's), and so is the stage
    running now (DVC_STAGE): its entry is still the previous execution's."""
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    stages.pop(os.environ.get("DVC_STAGE"), None)
    mine = {stage: entry for name, entry in stages.items() for stage, of in [stage_parts(name)] if of == dataset}
    return {
        f"dvc.stage.{_TAG_UNSAFE.sub('_', stage)}.md5": hashlib.md5(
            json.dumps(entry, sort_keys=True).encode()
        ).hexdigest()
        for stage, entry in mine.items()
    }


def project_root(lock: Path) -> Path:
    """The project: DVC_ROOT (for `dvc exp run --temp / --queue` the real project, not the throwaway copy the
    stage runs in), else the folder holding `lock`."""
    return Path(os.environ.get("DVC_ROOT") or lock.resolve().parent)


def workspace_tags(root: Path) -> dict[str, str]:
    """What a stage running in `root` knows of its execution without dvc.lock: the git commit and, under
    `dvc exp run`, the DVC experiment."""
    tags = {tag: os.environ[var] for tag, var in DVC_EXP_ENV.items() if os.environ.get(var)}
    commit = _git(root, "rev-parse", "HEAD")
    if commit:
        tags[COMMIT_TAG] = commit  # the tag MLflow's UI shows as the run's source version
    return tags


def execution_tags(lock: Path, dataset: str | None = None) -> dict[str, str]:
    """Git commit of the project holding `lock`, `dataset`'s DVC stage hashes, the DVC experiment and the Prefect flow
    run when known, and a source that outlives the run (the git remote, else the project folder)."""
    tags = {**lock_tags(lock, dataset), **workspace_tags(lock.resolve().parent)}
    # MLflow's default, the script path, is a temp folder under `dvc exp run --temp` and a venv path otherwise.
    root = project_root(lock)
    tags["mlflow.source.name"] = _git(root, "remote", "get-url", "origin") or str(root)
    tags["mlflow.source.type"] = "PROJECT"
    flow_run = next((os.environ[k] for k in PREFECT_ENV if os.environ.get(k)), None)
    if flow_run:
        tags["prefect.flow_run_id"] = flow_run
    return tags


def run_name(tags: dict[str, str], head: str | None = None) -> str:
    """What tells executions apart in the dataset's experiment: the DVC experiment, else the short commit (the
    dataset's name would repeat the experiment's and push them out of MLflow's Run Name column); a head's run
    starts with the head. Outside git and DVC: the head, or "workspace"."""
    label = tags.get(EXP_NAME_TAG) or tags.get(COMMIT_TAG, "")[:7]
    return " ".join(filter(None, [head, label])) or "workspace"


def in_workspace(lock: Path) -> bool:
    """Whether this execution runs in the project itself (`dvc repro`, the flows' runs without overrides, a
    workspace `dvc exp run`), not in the copy that `dvc exp run --temp / --queue` or a flow's override run makes:
    only then are its outputs what the project holds, so only then may it move what users serve."""
    return project_root(lock).resolve() == lock.resolve().parent


def execution_id(tags: dict[str, str], params: dict[str, object]) -> str:
    """sha256 of what the execution saw: params (with the data hashes), git commit and DVC stage hashes. The
    Prefect flow run, DVC experiment name and source are left out, so a rerun after a crash, from any flow run or
    `dvc exp run`, finds the runs the crash left."""
    seen = {k: v for k, v in tags.items() if k == COMMIT_TAG or k.startswith("dvc.stage.")}
    return sha256_json([seen, params])


@functools.cache
def pip_requirements() -> list[str]:
    """Exact installed versions, so MLflow does not spend seconds inferring them; tensorflow is whichever
    distribution provides it here (tensorflow-cpu on the CPU machines)."""
    dists = importlib.metadata.packages_distributions()
    return [f"{d}=={importlib.metadata.version(d)}" for module in PINNED_MODULES for d in dists[module][:1]]
