"""What the track stage needs besides the pipeline's outputs: where to log, whether that place answers,
the tags that tie a run to its execution (git, DVC, Prefect) and the pinned requirements of logged models."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 5
# MLflow's defaults (7 retries with backoff, 120 s timeout) turn a server that dies mid-run into minutes of
# waiting; the track CLI applies these unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PREFECT_ENV = ("PREFECT__FLOW_RUN_ID", "PIPELINE_PREFECT_FLOW_RUN_ID")  # set by Prefect workers / by us
_TAG_UNSAFE = re.compile(r"[^\w./ :-]")  # MLflow's allowed key characters; foreach stages are named `x@y`
PINNED_MODULES = ("keras", "tensorflow", "numpy", "h5py")  # what loading a saved .keras model needs


class TrackingError(RuntimeError):
    """The tracking server can't be reached; the message names the URI."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else an absolute sqlite path so every stage and tool finds the same store.

    DVC_ROOT is the project DVC runs in; for `dvc exp run --temp / --queue` DVC points it at the real project,
    not the throwaway copy the stage runs in (whose mlflow.db would be deleted with it)."""
    root = Path(os.environ.get("DVC_ROOT") or PROJECT)
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root.resolve() / 'mlflow.db'}"


def artifact_location(uri: str) -> str | None:
    """A sqlite store keeps artifacts in mlruns/ next to the database file, not in the working directory
    as MLflow would; a server chooses its own (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()


def check_reachable(uri: str) -> None:
    """Probe an http(s) server's /health within seconds; local stores need no check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).close()
        return
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return  # it answered (auth, a proxy prefix): MLflow's own calls say what is wrong, if anything
        reason = f"HTTP {err.code} {err.reason}"  # a proxy in front of a server that is down
    except OSError as err:  # refused, unknown host, timeout
        reason = getattr(err, "reason", None) or err
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable ({reason}). Start it (docs/tracking.md), point "
        f"MLFLOW_TRACKING_URI at a running server, or unset it to log to sqlite:///<project>/mlflow.db."
    )


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
    return {f"dvc.stage.{_TAG_UNSAFE.sub('_', name)}.md5": hashlib.md5(json.dumps(entry, sort_keys=True).encode())
            .hexdigest() for name, entry in stages.items()}


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


@functools.cache
def pip_requirements() -> list[str]:
    """Exact installed versions, so MLflow does not spend seconds inferring them; tensorflow is whichever
    distribution provides it here (tensorflow-cpu on the CPU machines)."""
    dists = importlib.metadata.packages_distributions()
    return [f"{d}=={importlib.metadata.version(d)}" for module in PINNED_MODULES for d in dists[module][:1]]
