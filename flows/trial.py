"""One setting of a fanned-out sweep, run by whichever worker picks it up, in its own checkout of the project
(the deployment's pull steps clone the git remote into the worker's scratch folder): params.yaml gets the
setting, the stages up to train_dense run one task each with their inputs pulled from the DVC remote (what is
unchanged is pulled or skipped, never recomputed), `dvc push` shares what the trial made, `dvc exp save` /
`dvc exp push origin` make it a DVC experiment named after the trial on the git remote, and an MLflow child run
under the sweep's parent run records it. Started by flows/fanout_sweep.py, not by hand."""

from __future__ import annotations

import json
import socket
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.dvc_commands import needed_for, project_root, run_dvc
from flows.experiments import exp_env
from flows.overrides import effective_config, write_overrides
from flows.tasks import run_stages, save_experiment_task
from flows.tracking_cli import sweep_tracking
from pipeline.layout import PARAMS_FILE, SUMMARY_FILE, DatasetLayout, stage_id


@flow(name="sweep-trial", flow_run_name="{setting}")
def trial(
    overrides: dict[str, Any], parent_run_id: str, tracking_uri: str, setting: str, lock_timeout_s: float = 3600.0
) -> dict:
    """overrides: this trial's dense.* values; parent_run_id / tracking_uri: the sweep's MLflow parent run;
    setting: the trial's name (flow run and MLflow child run)."""
    log = get_run_logger()
    root = project_root()
    name = effective_config(root, overrides).data.name
    write_overrides(root / PARAMS_FILE, overrides)
    head = stage_id("train_dense", name)
    order, inputs = needed_for(root, head)
    # What the head stage reads is pulled; stages further up are only checked (--allow-missing): their data
    # stays on the remote, so no image is downloaded or decoded.
    pull = {s: ["--pull"] if s in inputs | {head} else ["--pull", "--allow-missing"] for s in order}
    log.info("checkout %s on %s: %s with %s", root, socket.gethostname(), " -> ".join(order), overrides)
    stages = run_stages(order, root, lock_timeout_s, pull)
    run_dvc(["push", "--run-cache", head], root, log, lock_timeout_s)
    # A DVC experiment named after the trial, on the git remote the checkout came from: `dvc exp list origin`
    # names every trial; after `dvc exp pull origin`, `dvc exp show` lists them with their params and metrics.
    save_experiment_task(setting, root, stages, "origin", lock_timeout_s)
    summary = DatasetLayout.of(name).model_dir("dense") / SUMMARY_FILE
    tags = {
        "setting": setting,
        "prefect.flow_run_id": str(flow_run.id),
        "checkout": f"{socket.gethostname()}:{root}",
    }
    args = ["child", "--tracking-uri", tracking_uri, "--parent", parent_run_id, "--summary", str(summary)]
    args += ["--stages", json.dumps(stages), *(a for k, v in tags.items() for a in ("--tag", f"{k}={v}"))]
    run = sweep_tracking(args, root, exp_env(root, root, setting))  # tagged with the DVC experiment
    log.info("MLflow child run %s under %s", run["run_id"], parent_run_id)
    return {
        "setting": setting,
        "experiment": setting,
        "checkout": str(root),
        "stages": stages,
        "mlflow_run_id": run["run_id"],
    }
