"""What the track stage takes from the stages' execution records: when they ran (the runs' start and end
times), how long training took, and the live run a training stage logged its epochs to."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
from mlflow.entities import RunTag

from pipeline.contracts import ExecutionRecord
from pipeline.files import log
from pipeline.layout import DatasetLayout
from pipeline.tracking.owner import ADOPTED, ORPHANED, STATE_TAG, TRAINED, TRAINING

Span = tuple[int | None, int | None]  # started_ms, ended_ms; None: unknown (MLflow then uses the logging time)


@dataclass(frozen=True)
class ChildRun:
    """A head's child run of the execution's parent run."""

    run_id: str
    adopted: bool  # the training stage's live run: it holds the epochs logged live already


def training_record(layout: DatasetLayout, head: str) -> ExecutionRecord:
    """The execution record of `head`'s training stage (empty when it came from DVC's cache, or never ran here):
    its child run's times, the live run it logged to."""
    return ExecutionRecord.load_if_any(layout.execution(f"train_{head}"))


def stage_span(record: ExecutionRecord) -> Span:
    return record.started_ms, record.ended_ms  # records from before they kept times have none


def execution_span(layout: DatasetLayout) -> Span:
    """From the earliest start to the latest end among the stages' records: what the pipeline run took."""
    pattern = layout.execution("*")
    spans = [stage_span(ExecutionRecord.load(f)) for f in sorted(pattern.parent.glob(pattern.name))]
    starts, ends = [s for s, _ in spans if s is not None], [e for _, e in spans if e is not None]
    return min(starts, default=None), max(ends, default=None)


def timing_metrics(record: ExecutionRecord) -> dict[str, float]:
    """train_seconds and seconds_per_epoch (over every ensemble member's epochs) from a training stage's record,
    only where they are finite numbers."""
    seconds, epochs = record.seconds, record.epochs_run
    if seconds is None or not math.isfinite(seconds):
        return {}
    metrics = {"train_seconds": float(seconds)}
    if epochs is not None and epochs > 0:
        metrics["seconds_per_epoch"] = round(seconds / epochs, 1)
    return metrics


def adoptable_live_run(record: ExecutionRecord, experiment_id: str, owner: dict[str, str]) -> str | None:
    """The live run the training stage logged to, if this track can make it the head's child: in this store and
    experiment, and not yet adopted (a track that reran without retraining logs a new child instead) nor ended by
    a reap. It is claimed for `owner` (owner.claim's tags) at once, so no reap takes it for its finished stage's.
    A live run that can't be adopted for another reason is tagged orphaned, so it is never mistaken for a child."""
    run_id = record.mlflow_live_run_id
    if not run_id:
        return None
    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:  # logged to another store (a server, when this track logs locally)
        log.warning("live run %s is not in this tracking store: logging a new child run", run_id)
        return None
    if run.data.tags.get(STATE_TAG) not in (TRAINING, TRAINED):
        return None  # adopted by an earlier track (this one reran without retraining), orphaned, or failed
    if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in owner.items()])
        return run_id
    client.set_tag(run_id, STATE_TAG, ORPHANED)  # another experiment (data.name changed), or deleted
    return None


def child_run(
    live: str | None, record: ExecutionRecord, experiment_id: str, parent_id: str, name: str, tags: dict[str, str]
) -> ChildRun:
    """The head's child run of `parent_id`: the training stage's `live` run (adoptable_live_run), adopted (its
    name, the execution's tags, the parent link), else a new run starting when the stage started."""
    client = mlflow.MlflowClient()
    tags = {**tags, "mlflow.parentRunId": parent_id}
    if live is None:
        run = client.create_run(experiment_id, start_time=stage_span(record)[0], tags=tags, run_name=name)
        return ChildRun(run.info.run_id, adopted=False)
    client.set_tag(live, STATE_TAG, ADOPTED)  # first: a rerun after a crash here logs a fresh child instead
    client.log_batch(live, tags=[RunTag(key, value) for key, value in tags.items()])
    client.update_run(live, name=name)
    return ChildRun(live, adopted=True)


def terminate(run_id: str, span: Span) -> None:
    """End a finished run at the recorded end time (its logging ended just now)."""
    if span[0] is not None and span[1] is not None:
        mlflow.MlflowClient().set_terminated(run_id, "FINISHED", end_time=span[1])


def orphan(run_id: str, record: ExecutionRecord) -> None:
    """A live run claimed but not adopted (its execution was logged before): tagged orphaned, ended as trained."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, STATE_TAG, ORPHANED)
    client.set_terminated(run_id, "FINISHED", end_time=stage_span(record)[1])  # None: now
