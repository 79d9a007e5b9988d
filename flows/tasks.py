"""The flows' Prefect tasks: one DVC stage (in the workspace or a checkout), and a DVC experiment made stage by
stage in a scratch checkout."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.tasks import Task, exponential_backoff

from flows.artifacts import OUTCOME_TEXT
from flows.dvc_commands import is_up_to_date, reproduce_stage
from flows.experiments import check_out, exp_env, save_experiment, scratch_clone
from flows.overrides import write_overrides
from pipeline.datasets import sync
from pipeline.layout import DATASET_LIST, PARAMS_FILE, stage_parts

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
    """`dvc repro --single-item <stage>`, through DVC's Python API (flows/dvc_runner.py): the stage runs only if
    DVC finds its deps, params or outs changed.
    pull: e.g. ["--pull"] to fetch the outputs of an unchanged stage from the DVC remote instead of running it.
    env: more variables for the stage's command (those `dvc exp run` sets, in an experiment's checkout).
    The task's state is named after the outcome (Skipped, Restored, Pulled); its result {"outcome", "seconds"}."""
    log = get_run_logger()
    outcome, seconds = reproduce_stage(stage, root, log, lock_timeout_s, pull, env={**_env(), **(env or {})})
    text = f"{OUTCOME_TEXT[outcome]} ({seconds:.1f} s)"
    log.info("stage %s: %s", stage, text)
    return Completed(
        name=STATE_NAMES[outcome],
        message=text,
        data={"outcome": outcome, "seconds": seconds},
    )


def stage_task(stage: str) -> Task[[str, Path, float, list[str] | None, dict[str, str] | None], State]:
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
        state = task(stage, root, lock_timeout_s, (pull or {}).get(stage), env, return_state=True)
        # a task that returns a State ends in it: result() is that state's data, run_stage's dict, not a State
        results[stage] = cast(dict[str, Any], state.result())
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


@contextlib.contextmanager
def experiment_run(
    root: Path, name: str, overrides: dict[str, Any], select: Callable[[Path], list[str]], lock_timeout_s: float
) -> Iterator[tuple[Path, dict[str, dict]]]:
    """The overrides as DVC experiment `name`, made as `dvc exp run --temp` would but one task per stage: a scratch
    clone of `root` on its DVC cache, its outputs checked out, the stages `select` picks from it run as in a plain
    run, then saved and pushed back to `root`'s git repo (docs/orchestration.md says why not `dvc exp run`).
    Yields (the clone, stage -> {"outcome", "seconds"}) to read what the stages wrote before the clone goes."""
    with scratch_clone(root, name) as clone:
        write_overrides(clone / PARAMS_FILE, overrides)
        sync(clone / PARAMS_FILE, clone / DATASET_LIST)  # an added dataset's stages exist before DVC reads dvc.yaml
        check_out_task(name, clone, lock_timeout_s)
        stages = run_stages(select(clone), clone, lock_timeout_s, env=exp_env(root, clone, name))
        save_experiment_task(name, clone, stages, str(root), lock_timeout_s)
        yield clone, stages
