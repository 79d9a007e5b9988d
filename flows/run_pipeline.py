"""The whole DVC pipeline as a Prefect flow, run in the project it is started from (deployments: the
directory `prefect deploy` ran in).

    python -m flows.run_pipeline                               # params.yaml as it is; one task per stage
    python -m flows.run_pipeline -S dense.learning_rate=1e-4   # this run only: a DVC experiment, same tasks

Without PREFECT_API_URL the flow runs on a temporary local Prefect server. See docs/orchestration.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import pipeline_markdown, read_json_at
from flows.dvc_commands import project_root, stage_order
from flows.experiments import exp_env, scratch_clone
from flows.overrides import effective_config, parse_assignment, parse_value, write_overrides
from flows.tasks import check_out_task, experiment_name, run_stages, save_experiment_task, slug
from pipeline.layout import PARAMS_FILE, DatasetLayout


def run_experiment_stages(
    root: Path, name: str, overrides: dict[str, Any], data: DatasetLayout, lock_timeout_s: float
) -> tuple[dict[str, dict], dict | None, dict | None]:
    """The overrides run as DVC experiment `name`, one task per stage in a scratch clone of `root` on its DVC
    cache; the experiment is pushed back to `root`'s git repo. (stages, metrics, MLflow record) of the run."""
    with scratch_clone(root, name) as clone:
        write_overrides(clone / PARAMS_FILE, overrides)
        check_out_task(name, clone, lock_timeout_s)
        stages = run_stages(stage_order(clone), clone, lock_timeout_s, env=exp_env(root, clone, name))
        save_experiment_task(name, clone, stages, str(root), lock_timeout_s)
        return stages, read_json_at(clone, data.metrics), read_json_at(clone, data.mlflow_record)


@flow(name="pipeline")
def pipeline(overrides: dict[str, Any] | None = None, lock_timeout_s: float = 3600.0) -> dict:
    """Every DVC stage in dependency order; DVC skips what is up to date.

    overrides: params.yaml values for this run only, e.g. {"dense.learning_rate": 1e-4}. The run then is a
    DVC experiment made in a scratch clone, stage by stage: params.yaml, dvc.lock and the workspace stay untouched.
    lock_timeout_s: how long to wait while another DVC process (another flow run) holds the project's lock.
    """
    log = get_run_logger()
    root = project_root()
    overrides = overrides or {}
    name = effective_config(root, overrides).data.name
    log.info("project %s, dataset %s, overrides %s", root, name, overrides or "none")
    data = DatasetLayout.of(name)  # relative to the project, as DVC names its files
    if overrides:
        experiment = experiment_name("pipeline")
        stages, metrics, mlflow = run_experiment_stages(root, experiment, overrides, data, lock_timeout_s)
    else:
        experiment, stages = None, run_stages(stage_order(root), root, lock_timeout_s)
        metrics, mlflow = read_json_at(root, data.metrics), read_json_at(root, data.mlflow_record)
    outcomes = {stage: r["outcome"] for stage, r in stages.items()}
    ran = [s for s, o in outcomes.items() if o == "ran"]
    log.info(
        "ran: %s; not recomputed: %s",
        ", ".join(ran) or "nothing",
        ", ".join(s for s in outcomes if s not in ran) or "nothing",
    )
    create_markdown_artifact(
        pipeline_markdown(name, stages, metrics, mlflow, experiment, overrides),
        key=slug(f"pipeline-{name}"),
        description=f"pipeline run on {name}",
    )
    seconds = {stage: r["seconds"] for stage, r in stages.items()}
    return {
        "project": str(root),
        "experiment": experiment,
        "stages": outcomes,
        "seconds": seconds,
        "metrics": metrics,
        "mlflow": mlflow,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=parse_assignment,
        metavar="KEY=VALUE",
        help="override a params.yaml value for this run only (repeatable)",
    )
    ap.add_argument(
        "--lock-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait while another DVC process holds the project's lock",
    )
    args = ap.parse_args(argv)
    pipeline(overrides={key: parse_value(value) for key, value in args.overrides}, lock_timeout_s=args.lock_timeout)


if __name__ == "__main__":
    main()
