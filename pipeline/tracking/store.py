"""Where runs are logged (MLflow tracking URI and artifact location) and whether that place answers."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.layout import PROJECT

PROBE_TIMEOUT_S = 5
# MLflow's defaults (7 retries with backoff, 120 s timeout) turn a server that dies mid-run into minutes of
# waiting; the track CLI applies these unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


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


def open_experiment(name: str):
    """Point MLflow at tracking_uri() (a server is probed first) and at experiment `name`, creating it with its
    artifacts where artifact_location says; returns (uri, experiment)."""
    import mlflow  # here, not at the top: predict imports this module for check_reachable alone

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_location(uri))
    return uri, mlflow.set_experiment(name)
