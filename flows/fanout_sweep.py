"""Head-only sweep fanned out over workers: one run of the `sweep-trial/checkout` deployment per setting, so N
workers on its pool train N settings at once, each in its own checkout on cached features from the DVC remote.
The trials log MLflow child runs under one parent run and save DVC experiments named after them on the git
remote; the artifact ranks them by validation loss.

    MLFLOW_TRACKING_URI=http://... python -m flows.fanout_sweep --grid dense.learning_rate=1e-4,1e-3

Why run_deployment and not prefect-dask task mapping: a trial needs a checkout, the DVC remote and the stage
commands (TensorFlow), which a process worker already sets up per flow run; a Dask cluster would need the same
environment on every Dask worker and one more service to run. Prints the ranking as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from flows.artifacts import fanout_markdown
from flows.dvc_commands import project_root
from flows.overrides import head_settings, parse_assignment, parse_value
from flows.tasks import experiment_name, slug
from flows.tracking_cli import sweep_tracking
from pipeline.config import ConfigError

TRIAL_DEPLOYMENT = "sweep-trial/checkout"  # prefect.yaml


def wait_all(runs: list[FlowRun], poll_s: float) -> list[tuple[FlowRun, State]]:
    """The flow runs, re-read until every one is in a final state (completed, failed, crashed, cancelled), each
    with that state."""
    ids = [run.id for run in runs]
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if len(done := [(run, run.state) for run in runs if run.state and run.state.is_final()]) == len(ids):
                return done
            time.sleep(poll_s)


@flow(name="dense-sweep-fanout")
def fanout_sweep(grid: dict[str, list[Any]], deployment: str = TRIAL_DEPLOYMENT, poll_s: float = 2.0) -> list[dict]:
    """One trial flow run per combination of `grid` (dense.* keys only), all submitted at once; MLflow at the
    flow's MLFLOW_TRACKING_URI (the trials log there too, whatever their workers' environment)."""
    log = get_run_logger()
    root = project_root()
    name, settings = head_settings(root, grid)
    if not (uri := os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError("a fanned-out sweep logs its trials to a shared MLflow server: set MLFLOW_TRACKING_URI")
    prefix = experiment_name("sweep")
    tags = ["--tag", f"prefect.flow_run_id={flow_run.id}", "--tag", f"grid={json.dumps(grid)}"]
    parent = sweep_tracking(["parent", "--tracking-uri", uri, "--experiment", name, "--run-name", prefix, *tags], root)
    log.info("MLflow parent run %s; %d trials of %s", parent["run_id"], len(settings), deployment)
    common = {"parent_run_id": parent["run_id"], "tracking_uri": uri}
    submitted = []
    for i, s in enumerate(settings, 1):
        run = run_deployment(
            deployment,
            parameters={"overrides": s, "setting": f"{prefix}-{i}", **common},
            flow_run_name=f"{prefix}-{i}",
            timeout=0,  # submit and return: the trials run at once, as many as the pool has free workers
        )
        assert isinstance(run, FlowRun)  # not a coroutine: this flow is sync, so async_dispatch ran the sync path
        submitted.append(run)
    runs = wait_all(submitted, poll_s)
    failed = [f"{run.name} ({state.name})" for run, state in runs if not state.is_completed()]
    closed = sweep_tracking(
        ["close", "--tracking-uri", uri, "--parent", parent["run_id"], "--status", "FAILED" if failed else "FINISHED"],
        root,
    )
    by_name = {child["tags"].get("setting"): child for child in closed["children"]}
    rows = [
        {
            "setting": f"{prefix}-{i}",
            "overrides": s,
            "flow_run_id": str(run.id),
            # a trial that completed saved the DVC experiment of its name on the git remote
            "experiment": f"{prefix}-{i}" if state.is_completed() else None,
            **by_name.get(f"{prefix}-{i}", {}),
        }
        for i, (s, (run, state)) in enumerate(zip(settings, runs), 1)
    ]
    rows.sort(key=lambda r: r.get("metrics", {}).get("val_loss", float("inf")))
    create_markdown_artifact(
        fanout_markdown(name, rows, parent), key=slug(f"dense-sweep-fanout-{name}"), description=f"sweep on {name}"
    )
    if failed:
        raise RuntimeError(f"trials failed: {', '.join(failed)} (the artifact ranks those that finished)")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", action="append", required=True, type=parse_assignment, metavar="KEY=V1,V2,...")
    ap.add_argument("--deployment", default=TRIAL_DEPLOYMENT, help="the trial deployment (flow/deployment name)")
    args = ap.parse_args(argv)
    grid = {key: [parse_value(v) for v in values.split(",")] for key, values in args.grid}
    print(json.dumps(fanout_sweep(grid=grid, deployment=args.deployment)))


if __name__ == "__main__":
    main()
