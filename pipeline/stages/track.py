"""Stage 7: log one pipeline execution to MLflow: a parent run, one child run per head, both heads registered
under `<data.name>-classifier` (on images) and `<data.name>-classifier-served` (image files), and the `champion`
alias on both models' best version seen so far, moved only by executions in the project's workspace.

Tracking URI: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db with artifacts in <project>/mlruns.
An http(s) server is probed at /health first, so a server that is down fails the stage in seconds; one that dies
mid-run fails it with the same message. Runs that processes which died left RUNNING (a killed track's or training
stage's, of any execution: tracking/owner.py) are ended FAILED, and the model versions they registered deleted,
before anything is logged; a run whose process still runs is left alone. An execution logged before (the same
execution tag, finished, every version there) is not logged again. Runs are named after the DVC experiment (else
the commit), a child also after its head, and span the stages' execution records; a head's child is the run its
training stage logged epochs to live (with a server), adopted.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import mlflow

from pipeline.cli import output, parser, run_cli, setup_logging
from pipeline.config import Config, load_config
from pipeline.contracts import Champion, Metrics, TrackRecord
from pipeline.files import JSON, log
from pipeline.layout import HEADS, LOCK_FILE, ROC_PNG, DatasetLayout
from pipeline.tracking.lineage import EXECUTION_TAG, execution_id, execution_tags, in_workspace, run_name
from pipeline.tracking.owner import HEARTBEAT_TAG, claim, heartbeat, reap
from pipeline.tracking.records import (
    adoptable_live_run,
    child_run,
    execution_span,
    orphan,
    stage_span,
    terminate,
    training_record,
)
from pipeline.tracking.registry import (
    CHAMPION,
    TrackedRuns,
    logged_execution,
    model_name,
    register_champion,
    served_name,
)
from pipeline.tracking.report_copy import log_report_copy, provenance_rows
from pipeline.tracking.runs import ClientStore, log_files, log_head, log_plots, run_params
from pipeline.tracking.store import HTTP_DEFAULTS, TrackingError, check_reachable, open_experiment


def track(cfg: Config, layout: DatasetLayout, lock: Path, out: Path) -> TrackRecord:
    """Log one execution of the outputs under `layout`; write what was logged (ids, versions, champion) to `out`."""
    uri, experiment = open_experiment(cfg.data.name)
    try:
        record = _log_execution(cfg, layout, lock, uri, experiment.experiment_id)
    except Exception:
        check_reachable(uri)  # a server that died mid-run: the documented one-line error, not MLflow's traceback
        raise
    record.save(out)
    log.info("logged to %s: experiment %s, run %s; %s", uri, cfg.data.name, record.parent_run_id, champion_line(record))
    return record


def champion_line(record: TrackRecord) -> str:
    champion, model, served = record.champion, record.registered_model, record.served_model
    moved = "" if record.workspace else " (left as it was: an execution outside the workspace moves no alias)"
    if champion is None:
        return f"{model}@{CHAMPION}: none yet{moved}"
    return (
        f"{model}@{CHAMPION} is version {champion.version} ({champion.shipped}, validation log loss "
        f"{champion.val_loss:.4f}), {served}@{CHAMPION} version {champion.served_version}{moved}"
    )


def _log_execution(cfg: Config, layout: DatasetLayout, lock: Path, uri: str, experiment_id: str) -> TrackRecord:
    params = run_params(cfg, layout.download_info, layout.manifest)
    metrics = Metrics.load(layout.metrics)
    runs, versions, served = {}, {}, {}
    name, workspace = model_name(cfg), in_workspace(lock)
    tags = execution_tags(lock, cfg.data.name)
    tags[EXECUTION_TAG] = execution_id(tags, params)
    owner = claim()  # this process owns the runs it logs
    tags |= owner
    trained = {head: training_record(layout, head) for head in HEADS}
    # The live runs this track adopts become its own first, so the reap does not take them for their stages'.
    live = {head: adoptable_live_run(trained[head], experiment_id, owner) for head in HEADS}
    if ended := reap(ClientStore(), experiment_id):
        log.warning("ended %d run(s) of processes that died FAILED: %s", len(ended), ", ".join(ended))
    record_of = functools.partial(_record, cfg, uri, experiment_id, workspace)
    if logged := logged_execution(experiment_id, tags[EXECUTION_TAG], name):
        # The same outputs again (a stage reran and wrote what it had written): nothing is logged twice.
        for head, run_id in live.items():
            if run_id:
                orphan(run_id, trained[head])
        log.info("this execution is logged already, as parent run %s: nothing new logged", logged.parent_run_id)
        return record_of(logged, register_champion(name, logged.model_versions, workspace))
    # The parent spans the stages' execution records, each child its training stage: the pipeline's real times.
    span = execution_span(layout)
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment_id, start_time=span[0], tags=tags, run_name=run_name(tags))
    beat = functools.partial(client.set_tag, parent.info.run_id, HEARTBEAT_TAG)
    with heartbeat(beat), mlflow.start_run(run_id=parent.info.run_id):
        mlflow.log_params(params)
        log_files([layout.metrics, layout.prepare_summary, layout.download_info, lock])
        log_plots(layout, [ROC_PNG])
        for head in HEADS:
            child = child_run(live[head], trained[head], experiment_id, parent.info.run_id, run_name(tags, head), tags)
            info, served[head] = log_head(layout, head, child, cfg=cfg, params=params)
            terminate(child.run_id, stage_span(trained[head]))
            runs[head], versions[head] = info.run_id, int(str(info.registered_model_version))  # str over REST
        champion = register_champion(name, versions, workspace)
        scores = {f"{head}_test_accuracy": metrics[head].accuracy for head in HEADS}
        if champion:  # none: an experiment's execution before any in the workspace
            scores |= {"champion_test_accuracy": champion.test_accuracy, "champion_version": champion.version}
        mlflow.log_metrics(scores)
        held = champion.model_dump() if champion else {"head": None, "shipped": None, "changed": False}
        mlflow.set_tags({f"champion.{k}": str(held[k]) for k in ("head", "shipped", "changed")})
        record = record_of(TrackedRuns(parent.info.run_id, runs, versions, served), champion)
        # report.html with what the DVC output cannot hold: the date, commit, these runs, the champion.
        log_report_copy(layout.report, provenance_rows(record, tags, span[1]))
    terminate(parent.info.run_id, span)
    return record


def _record(
    cfg: Config, uri: str, experiment_id: str, workspace: bool, runs: TrackedRuns, champion: Champion | None
) -> TrackRecord:
    name = model_name(cfg)
    return TrackRecord(
        tracking_uri=uri,
        experiment_name=cfg.data.name,
        experiment_id=experiment_id,
        parent_run_id=runs.parent_run_id,
        child_run_ids=runs.child_run_ids,
        model_versions=runs.model_versions,
        served_versions=runs.served_versions,
        registered_model=name,
        served_model=served_name(name),
        champion=champion,
        workspace=workspace,
    )


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    ap.add_argument("--data", type=Path, required=True, help="the dataset's folder, data/<data.name>")
    ap.add_argument("--lock", type=Path, default=LOCK_FILE, help="its stage hashes become run tags")
    ap.add_argument("--out", type=output(JSON), required=True, help="JSON record of what was logged")
    args = ap.parse_args(argv)
    setup_logging()
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    track(load_config(args.params, args.dataset), DatasetLayout(args.data), args.lock, args.out)


if __name__ == "__main__":
    run_cli(main, TrackingError)
