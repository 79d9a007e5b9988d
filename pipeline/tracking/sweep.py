"""MLflow runs of a fanned-out sweep, for the flows (which never import MLflow): one parent run per sweep, one
child run per trial, logged by the trial in its own checkout. Each command prints one JSON line.

    python -m pipeline.tracking.sweep parent --tracking-uri URI --experiment NAME --run-name NAME [--tag K=V]
    python -m pipeline.tracking.sweep child --tracking-uri URI --parent ID --summary FILE --stages JSON [--tag K=V]
    python -m pipeline.tracking.sweep close --tracking-uri URI --parent ID --status FINISHED|FAILED
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli import parser, run_cli
from pipeline.config import load_config
from pipeline.contracts import ContractError, TrainingSummary
from pipeline.layout import SUMMARY_METRICS, stage_parts
from pipeline.tracking.lineage import workspace_tags

if TYPE_CHECKING:  # for the annotation only: _client imports MLflow when it is called
    from mlflow import MlflowClient


class SweepTrackingError(ValueError):
    """The MLflow server refused or does not know a run: one line, no traceback."""


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _tags(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SweepTrackingError(f"--tag expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def parent(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> dict:
    """A RUNNING parent run in `experiment` (created if missing); the trials log under it."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, tags={**tags, "sweep": "parent"}, run_name=run_name)
    return {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": uri}


def child(uri: str, parent_id: str, params: Path, summary: Path, stages: dict, tags: dict[str, str]) -> dict:
    """A finished child run: every param of `params` (the trial's params.yaml), the head's validation metrics
    from `summary`, each stage's outcome as a tag and its seconds as a metric, the commit and DVC experiment."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    try:
        experiment_id = client.get_run(parent_id).info.experiment_id
    except Exception as err:  # MlflowException (unknown run) or a connection error: one line either way
        raise SweepTrackingError(f"parent run {parent_id} on {uri}: {err}") from None
    trained = TrainingSummary.load(summary)
    # The git commit and, when the trial set DVC_EXP_NAME, its DVC experiment (the tags a pipeline run gets).
    run_tags = {**workspace_tags(params.resolve().parent), **tags, "mlflow.parentRunId": parent_id, "sweep": "trial"}
    run_tags |= {f"stage.{stage_parts(stage)[0]}": r["outcome"] for stage, r in stages.items()}
    run = client.create_run(experiment_id, tags=run_tags, run_name=tags.get("setting"))
    metrics = {m: getattr(trained, m) for m in SUMMARY_METRICS}
    metrics |= {f"seconds.{stage_parts(stage)[0]}": r["seconds"] for stage, r in stages.items()}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in load_config(params).flat().items()],
        tags=[RunTag(k, v) for k, v in run_tags.items()],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return {"run_id": run.info.run_id}


def close(uri: str, parent_id: str, status: str) -> dict:
    """End the parent run (its best child's val_loss logged on it); the child runs as JSON, by val_loss."""
    client = _client(uri)
    run = client.get_run(parent_id)
    query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
    children = [
        {"run_id": r.info.run_id, "metrics": r.data.metrics, "tags": r.data.tags, "params": r.data.params}
        for r in client.search_runs([run.info.experiment_id], query, max_results=10_000)
    ]
    children.sort(key=lambda c: c["metrics"].get("val_loss", float("inf")))
    if children and "val_loss" in children[0]["metrics"]:
        client.log_metric(parent_id, "best_val_loss", children[0]["metrics"]["val_loss"])
        client.set_tag(parent_id, "best_run_id", children[0]["run_id"])
    client.set_terminated(parent_id, status)
    return {"run_id": parent_id, "children": children}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, "the trial's parameters file (child)")
    ap.add_argument("command", choices=["parent", "child", "close"])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment")
    ap.add_argument("--run-name")
    ap.add_argument("--parent")
    ap.add_argument("--summary", type=Path)
    ap.add_argument("--stages", type=json.loads, help='JSON: {"stage": {"outcome": ..., "seconds": ...}}')
    ap.add_argument("--status", choices=["FINISHED", "FAILED", "KILLED"])
    ap.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    need = {
        "parent": ("experiment", "run_name"),
        "child": ("parent", "summary", "stages"),
        "close": ("parent", "status"),
    }
    if missing := [f"--{a.replace('_', '-')}" for a in need[args.command] if getattr(args, a) is None]:
        ap.error(f"{args.command} needs {' '.join(missing)}")

    def run() -> None:
        tags = _tags(args.tag)
        if args.command == "parent":
            out = parent(args.tracking_uri, args.experiment, args.run_name, tags)
        elif args.command == "child":
            out = child(args.tracking_uri, args.parent, args.params, args.summary, args.stages, tags)
        else:
            out = close(args.tracking_uri, args.parent, args.status)
        sys.stdout.write(json.dumps(out) + "\n")

    run_cli(run, SweepTrackingError, ContractError)


if __name__ == "__main__":
    main()
