"""What a flow run shows as its Prefect artifact: stage outcomes, both heads' test metrics, MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.layout import METRIC_NAMES, SUMMARY_METRICS
from pipeline.links import is_server, mlflow_run_url

OUTCOME_TEXT = {
    "ran": "ran",
    "skipped": "skipped (unchanged)",
    "restored": "restored from DVC's run-cache",
    "pulled": "pulled from the DVC remote",
}


def json_object(text: str, source: object) -> dict[str, Any]:
    """The JSON object in `text` (what our files and commands write); `source` names it in the error."""
    if isinstance(obj := json.loads(text), dict):
        return obj
    raise ValueError(f"{source} holds a JSON {type(obj).__name__}, not an object")


def read_json_at(root: Path, path: Path | str, rev: str | None = None) -> dict[str, Any] | None:
    """A JSON file of the workspace (rev None) or of a DVC experiment; None when that revision has none."""
    if rev is None:
        file = root / path
        return json_object(file.read_text(), file) if file.exists() else None
    import dvc.api
    from dvc.exceptions import PathMissingError

    try:
        return json_object(dvc.api.read(Path(path).as_posix(), repo=str(root), rev=rev), f"{path} at {rev}")
    except PathMissingError:
        return None


def _cell(value: object) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def mlflow_links(record: dict) -> list[tuple[str, str]]:
    """(run, link) for the parent run and each head's child run; plain ids when the store is not a server."""
    uri, experiment = record["tracking_uri"].rstrip("/"), record["experiment_id"]
    runs = {"pipeline (parent)": record["parent_run_id"], **record["child_run_ids"]}

    def link(run_id: str) -> str:
        if url := mlflow_run_url(uri, experiment, run_id):
            return f"[{run_id}]({url})"
        return f"`{run_id}` (experiment {experiment})"

    return [(label, link(run_id)) for label, run_id in runs.items()]


def local_store_note(record: dict, root: Path) -> str | None:
    """How to see the runs of a local (sqlite) store: `mlflow ui` on it when it is this project's, else that the
    record names another machine's or checkout's store (track was skipped here: its outputs were unchanged)."""
    uri, experiment = record["tracking_uri"], record["experiment_id"]
    if is_server(uri):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and path.resolve().is_relative_to(root.resolve()):
        local = f"sqlite:///{path.resolve().relative_to(root.resolve()).as_posix()}"
        ui = "http://127.0.0.1:5000"
        return (
            f"Local store `{local}`: `mlflow ui --backend-store-uri {local}` in the project, then "
            f"{ui}/#/experiments/{experiment} (run pages: `{ui}/#/experiments/{experiment}/runs/<id>`)."
        )
    return (
        f"Logged to `{uri}`, not this project's store: these runs were logged on another machine or checkout "
        f"(its `mlflow.json` is committed; `track` re-logs here when its inputs change)."
    )


def stage_table(stages: dict[str, dict]) -> str:
    """stage -> {"outcome", "seconds"} as a table; seconds blank where unknown."""
    rows = [[s, OUTCOME_TEXT.get(r["outcome"], r["outcome"]), r.get("seconds")] for s, r in stages.items()]
    return _table(["stage", "outcome", "seconds"], rows)


def pipeline_markdown(
    name: str,
    stages: dict[str, dict],
    metrics: dict | None,
    mlflow: dict | None,
    experiment: str | None,
    overrides: dict,
    root: Path,
) -> str:
    where = f"DVC experiment `{experiment}`" if experiment else "the workspace"
    parts = [f"## Pipeline `{name}` in {where}"]
    if experiment:
        settings = ", ".join(f"`{k}={v}`" for k, v in overrides.items())
        parts.append(
            f"Overrides: {settings}. Compare with `dvc exp show`, bring into the workspace with "
            f"`dvc exp apply {experiment}`."
        )
    parts.append(stage_table(stages))
    if metrics:
        parts.append("### Test metrics")
        parts.append(
            _table(["head", *METRIC_NAMES], [[head, *(m.get(c) for c in METRIC_NAMES)] for head, m in metrics.items()])
        )
    if mlflow:
        parts.append("### MLflow runs")
        links = [f"- {label}: {link}" for label, link in mlflow_links(mlflow)]
        if champion := mlflow.get("champion"):
            links.append(
                f"- `{mlflow['registered_model']}@champion`: version {champion['version']} (ships "
                f"{champion.get('shipped')}, chosen on validation)"
            )
        parts.append("\n".join(links))
        if note := local_store_note(mlflow, root):
            parts.append(note)
    return "\n\n".join(parts)


def sweep_markdown(name: str, rows: list[dict]) -> str:
    """One row per setting (its overrides, validation metrics, experiment); the best val_loss in bold."""
    keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    best = min(range(len(rows)), key=lambda i: rows[i]["summary"]["val_loss"])
    table = []
    for i, row in enumerate(rows):
        cells = [
            *(row["overrides"].get(k) for k in keys),
            *(row["summary"].get(c) for c in SUMMARY_METRICS),
            f"`{row['experiment']}`",
            OUTCOME_TEXT.get(row["extract"], row["extract"]),
        ]
        table.append([f"**{_cell(c)}**" if i == best else c for c in cells])
    return "\n\n".join(
        [
            f"## Dense-head sweep `{name}`: {len(rows)} settings on the same cached features",
            _table([*keys, *SUMMARY_METRICS, "experiment", "extract"], table),
            f"Best by validation loss: `{rows[best]['experiment']}`. Compare all with `dvc exp show`; "
            f"bring one into the workspace with `dvc exp apply <experiment>`.",
        ]
    )


def fanout_markdown(name: str, rows: list[dict], parent: dict) -> str:
    """The fanned-out sweep's trials ranked by val_loss (rows come sorted), from their MLflow child runs."""
    keys = list(dict.fromkeys(k for row in rows for k in row["overrides"]))
    uri, experiment = parent["tracking_uri"].rstrip("/"), parent["experiment_id"]
    link = mlflow_links(
        {"tracking_uri": uri, "experiment_id": experiment, "parent_run_id": parent["run_id"], "child_run_ids": {}}
    )
    table = [
        [
            rank,
            f"`{row['setting']}`",
            *(row["overrides"].get(k) for k in keys),
            *(row.get("metrics", {}).get(c) for c in SUMMARY_METRICS),
            f"`{row['experiment']}`" if row.get("experiment") else "none",
            OUTCOME_TEXT.get(row.get("tags", {}).get("stage.extract"), row.get("tags", {}).get("stage.extract")),
            row.get("metrics", {}).get("seconds.train_dense"),
            row.get("tags", {}).get("checkout", "no MLflow run (trial failed)"),
        ]
        for rank, row in enumerate(rows, 1)
    ]
    header = ["rank", "trial", *keys, *SUMMARY_METRICS, "DVC experiment", "extract", "train_dense s", "checkout"]
    return "\n\n".join(
        [
            f"## Dense-head sweep `{name}` fanned out: {len(rows)} trials, each in its own checkout",
            _table(header, table),
            f"Ranked by validation loss. MLflow parent run: {link[0][1]} (each trial a child run). Each trial is "
            f"a DVC experiment on the git remote (`dvc exp list origin`); `dvc exp pull --no-cache origin` brings "
            f"them into a clone, for `dvc exp show` and `dvc exp apply <experiment>`.",
        ]
    )
