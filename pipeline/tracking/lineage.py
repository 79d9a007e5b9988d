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

PREFECT_ENV = ("PREFECT__FLOW_RUN_ID", "PIPELINE_PREFECT_FLOW_RUN_ID")  # set by Prefect workers / by us
_TAG_UNSAFE = re.compile(r"[^\w./ :-]")  # MLflow's allowed key characters; foreach stages are named `x@y`
PINNED_MODULES = ("keras", "tensorflow", "numpy", "h5py")  # what loading a saved .keras model needs
EXECUTION_TAG = "pipeline.execution"


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def lock_tags(lock: Path) -> dict[str, str]:
    """`dvc.stage.<stage>.md5`: md5 of the stage's dvc.lock entry (cmd, dep/param/out hashes) as canonical JSON.

    It changes whenever anything the stage saw or wrote changes; dvc.lock itself is logged as an artifact.
    The stage running now (DVC_STAGE) is left out: its entry is still the previous execution's."""
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    stages.pop(os.environ.get("DVC_STAGE"), None)
    return {
        f"dvc.stage.{_TAG_UNSAFE.sub('_', name)}.md5": hashlib.md5(
            json.dumps(entry, sort_keys=True).encode()
        ).hexdigest()
        for name, entry in stages.items()
    }


def execution_tags(lock: Path) -> dict[str, str]:
    """Git commit of the project holding `lock`, its DVC stage hashes and the Prefect flow run, when known."""
    tags = lock_tags(lock)
    commit = _git(lock.resolve().parent, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit  # the tag MLflow's UI shows as the run's source version
    flow_run = next((os.environ[k] for k in PREFECT_ENV if os.environ.get(k)), None)
    if flow_run:
        tags["prefect.flow_run_id"] = flow_run
    return tags


def execution_id(tags: dict[str, str], params: dict[str, object]) -> str:
    """sha256 of what the execution saw: params (with the data hashes), git commit and DVC stage hashes. The
    Prefect flow run is left out, so a rerun after a crash, from any flow run, finds the runs the crash left."""
    seen = {k: v for k, v in tags.items() if k != "prefect.flow_run_id"}
    return hashlib.sha256(json.dumps([seen, params], sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def pip_requirements() -> list[str]:
    """Exact installed versions, so MLflow does not spend seconds inferring them; tensorflow is whichever
    distribution provides it here (tensorflow-cpu on the CPU machines)."""
    dists = importlib.metadata.packages_distributions()
    return [f"{d}=={importlib.metadata.version(d)}" for module in PINNED_MODULES for d in dists[module][:1]]
