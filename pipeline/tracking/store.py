"""Where runs are logged (MLflow tracking URI and artifact location), whether that place answers, and the typed
parameters a head's run holds beside its model."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config
from pipeline.contracts import read_model, write_model
from pipeline.files import log
from pipeline.layout import PROJECT
from pipeline.links import is_server

if TYPE_CHECKING:  # for the annotation only: open_experiment imports MLflow when it is called
    from mlflow.entities import Experiment

PROBE_TIMEOUT_S = 5
# MLflow's defaults (7 retries with backoff, 120 s timeout) turn a server that dies mid-run into minutes of
# waiting; the track CLI applies these unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
# In each head's run beside summary.json: the execution's Config as JSON, what a Keras model logged there is
# predicted with (its backbone, evaluate.tta_flip). MLflow's run params are text ("None", "True"): not parsed back.
RUN_CONFIG = "config.json"


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
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()


def save_run_config(cfg: Config, path: Path) -> None:
    write_model(cfg, path)


def run_config(path: Path) -> Config:
    """A RUN_CONFIG file, validated as params.yaml is (strict types, no unknown keys)."""
    return read_model(Config, path)


def check_reachable(uri: str) -> None:
    """Probe an http(s) server's /health within seconds; local stores need no check."""
    if not is_server(uri):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S).close()
        return
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return  # it answered (auth, a proxy prefix): MLflow's own calls say what is wrong, if anything
        reason: object = f"HTTP {err.code} {err.reason}"  # a proxy in front of a server that is down
    except OSError as err:  # refused, unknown host, timeout
        reason = getattr(err, "reason", None) or err
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable ({reason}). Start it (docs/tracking.md), point "
        f"MLFLOW_TRACKING_URI at a running server, or unset it to log to sqlite:///<project>/mlflow.db."
    )


def open_experiment(name: str) -> tuple[str, Experiment]:
    """Point MLflow at tracking_uri() (a server is probed first) and at experiment `name`, creating it with its
    artifacts where artifact_location says; returns (uri, experiment)."""
    import mlflow  # here, not at the top: predict imports this module for check_reachable alone

    uri = tracking_uri()
    own_store = uri != os.environ.get("MLFLOW_TRACKING_URI")  # the project's default, not a chosen one
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)  # (this sets MLFLOW_TRACKING_URI too)
    experiment, location = mlflow.get_experiment_by_name(name), artifact_location(uri)
    if experiment is None:
        mlflow.create_experiment(name, artifact_location=location)
    elif location and own_store and not _inside(experiment.artifact_location, location):
        _repoint(uri, experiment.experiment_id, experiment.artifact_location, location)
    return uri, mlflow.set_experiment(name)


def _inside(location: str, root: str) -> bool:
    return location == root or location.startswith(root.rstrip("/") + "/")


def _repoint(uri: str, experiment_id: str, was: str, location: str) -> None:
    """In the project's own store (a chosen MLFLOW_TRACKING_URI is left as it is), a copied project's mlflow.db
    keeps the original's absolute artifact location: point the experiment at this project's mlruns/, so new runs
    never write into the other project. MLflow has no call that changes an experiment's artifact location, hence
    the SQL on the project's own sqlite file. Earlier runs keep theirs."""
    with contextlib.closing(sqlite3.connect(uri[len("sqlite:///") :])) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (location, experiment_id))
    log.warning(
        "experiment %s kept its artifacts in %s (a copied project?): new runs go to %s", experiment_id, was, location
    )
