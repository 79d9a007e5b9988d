"""Where things are shown: whether an MLflow tracking URI is a server, and a run's page on it. Shared by the
tracking code, the track stage (its report copy) and the flows (their artifacts), which may not import the
tracking code."""

from __future__ import annotations


def is_server(tracking_uri: str) -> bool:
    """An MLflow tracking server (http or https), not a local store (sqlite, a folder)."""
    return tracking_uri.startswith(("http://", "https://"))


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a server; None for a local store (no page to link)."""
    uri = tracking_uri.rstrip("/")
    if not is_server(uri):
        return None
    return f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"
