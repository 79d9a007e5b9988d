"""Where things are shown: the page of an MLflow run on a tracking server. Shared by the track stage (its report
copy) and the flows (their artifacts), which may not import the tracking code."""

from __future__ import annotations


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a server; None for a local store (no page to link)."""
    uri = tracking_uri.rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"
