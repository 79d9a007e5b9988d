"""The flows' Prefect tasks: one DVC stage (in the workspace or a checkout), one DVC experiment, and the steps
that turn a scratch checkout into a DVC experiment."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from flows.artifacts import OUTCOME_TEXT
from flows.dvc_commands import is_up_to_date, run_dvc
from flows.experiments import check_out, head_commit, save_experiment
from flows.overrides import set_args
from pipeline.layout import stage_parts

# Only fetching the data meets transient failures worth retrying (network, mirror); a failing training
# step fails the same way again.
RETRIES = {"download": 3}
# The task run's state name in the Prefect UI: only a stage that ran says "Completed".
STATE_NAMES = {"ran": "Completed", "skipped": "Skipped", "restored": "Restored", "pulled": "Pulled"}


def _env() -> dict[str, str]:
    """The track stage tags its MLflow runs with this flow run (workers set PREFECT__FLOW_RUN_ID, local runs don't)."""
    return {"PIPELINE_PREFECT_FLOW_RUN_ID": str(flow_run.id)}


def slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def experiment_name(prefix: str) -> str:
    """Unique per flow run, so concurrent runs never collide on a DVC experiment name."""
    return f"{prefix}-{str(flow_run.id)[:8]}"


# Prefect must never skip a stage on its own: DVC's lock file decides what is up to date.
@task(task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(
    stage: str, root: Path, lock_timeout_s: float, pull: list[str] | None = None, env: dict[str, str] | None = None
) -> State:
    """`dvc repro --single-item <stage>`: the stage runs only if DVC finds its deps, params or outs changed.
    pull: e.g. ["--pull"] to fetch the outputs of an unchanged stage from the DVC remote instead of running it.
    env: more variables for the stage's command (those `dvc exp run` sets, in an experiment's checkout).
    The task's state is named after the outcome (Skipped, Restored, Pulled); its result {"outcome", "seconds"}."""
    log = get_run_logger()
    args = ["repro", "--single-item", *(pull or []), stage]
    result = run_dvc(args, root, log, lock_timeout_s, env={**_env(), **(env or {})})
    outcome = result.outcomes.get(stage, "unknown")
    text = f"{OUTCOME_TEXT.get(outcome, outcome)} ({result.seconds:.1f} s)"
    log.info("stage %s: %s", stage, text)
    return Completed(
        name=STATE_NAMES.get(outcome, "Completed"),
        message=text,
        data={"outcome": outcome, "seconds": result.seconds},
    )


def stage_task(stage: str):
    """The stage's task, retried with growing delays where a retry can help."""
    retries = RETRIES.get(stage_parts(stage)[0], 0)
    return run_stage.with_options(retries=retries, retry_delay_seconds=exponential_backoff(10) if retries else 0)


def run_stages(
    stages: list[str],
    root: Path,
    lock_timeout_s: float,
    pull: dict[str, list[str]] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, dict]:
    """One task per stage that must run, in order; stage -> {"outcome", "seconds"}. A failed stage raises and stops
    the run. Without `pull`, a stage that `dvc status` finds up to date (asked just before it, after what ran
    upstream) gets no task, only the outcome "skipped": the Prefect UI's graph and state counts show what ran, not
    a green "Completed" for each unchanged stage. With `pull` (a fresh checkout: nothing is there yet) every stage
    is a task."""
    log, results = get_run_logger(), {}
    for stage in stages:
        if pull is None:
            current, seconds = is_up_to_date(stage, root, log, lock_timeout_s)
            if current:
                log.info("stage %s: %s (%.1f s to check; no task)", stage, OUTCOME_TEXT["skipped"], seconds)
                results[stage] = {"outcome": "skipped", "seconds": seconds}
                continue
        task = stage_task(stage)
        results[stage] = task(stage, root, lock_timeout_s, (pull or {}).get(stage), env, return_state=True).result()
    return results


@task(task_run_name="check out {name}", cache_policy=NO_CACHE)
def check_out_task(name: str, clone: Path, lock_timeout_s: float) -> State:
    """The experiment's checkout gets the committed outputs from the shared DVC cache (`dvc checkout`)."""
    start = time.monotonic()
    check_out(clone, get_run_logger(), lock_timeout_s)
    return Completed(message=f"outputs checked out ({time.monotonic() - start:.1f} s)")


@task(task_run_name="save experiment {name}", cache_policy=NO_CACHE)
def save_experiment_task(name: str, clone: Path, stages: dict[str, dict], remote: str, lock_timeout_s: float) -> State:
    """`dvc exp save` in the checkout, `dvc exp push` to the git repo `remote` (the workspace, or origin)."""
    start = time.monotonic()
    save_experiment(clone, name, stages, remote, get_run_logger(), lock_timeout_s)
    return Completed(message=f"saved as {name}, pushed to {remote} ({time.monotonic() - start:.1f} s)")


@task(task_run_name="experiment {name}", cache_policy=NO_CACHE)
def run_experiment(
    name: str, overrides: dict[str, Any], targets: list[str], root: Path, lock_timeout_s: float
) -> dict[str, dict]:
    """`dvc exp run --temp -S ...`: the run happens in a temporary copy of the project, so params.yaml, dvc.lock
    and the workspace stay as they are; the experiment keeps its own dvc.lock, params and metrics in git
    (`dvc exp show`), its outputs in the shared DVC cache. Unchanged stages are skipped or restored.
    stage -> {"outcome", "seconds"}, the seconds read from when DVC reported each stage (one command for all)."""
    head_commit(root)
    log = get_run_logger()
    args = ["exp", "run", "--temp", "--name", name, *set_args(overrides), *targets]
    result = run_dvc(args, root, log, lock_timeout_s, env=_env())
    stages: dict[str, dict] = {
        s: {"outcome": o, "seconds": result.stage_seconds.get(s)} for s, o in result.outcomes.items()
    }
    for stage, r in stages.items():
        log.info("experiment %s, stage %s: %s (about %s s)", name, stage, OUTCOME_TEXT.get(r["outcome"]), r["seconds"])
    return stages
