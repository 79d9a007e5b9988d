"""The whole DVC pipeline as a Prefect flow, run in the project it is started from (deployments: the
directory `prefect deploy` ran in).

    python -m flows.run_pipeline                               # params.yaml as it is; one task per stage
    python -m flows.run_pipeline --dataset cats_and_dogs_filtered   # one dataset's stages only
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
from flows.overrides import effective_configs, parse_assignment, parse_value
from flows.tasks import experiment_name, experiment_run, run_stages, slug
from pipeline.datasets import sync
from pipeline.layout import DATASET_LIST, PARAMS_FILE, DatasetLayout, stage_parts


def _of(datasets: list[str], stages: list[str]) -> list[str]:
    """The stages of `datasets`, and `source` (it checks every dataset), in `stages`' order."""
    return [s for s in stages if stage_parts(s)[1] in (None, *datasets)]


def results_at(root: Path, dataset: str) -> dict:
    """What the run made of `dataset`: its test metrics and its MLflow record (None where missing)."""
    layout = DatasetLayout.of(dataset)  # relative to the project, as DVC names its files
    return {"metrics": read_json_at(root, layout.metrics), "mlflow": read_json_at(root, layout.mlflow_record)}


@flow(name="pipeline")
def pipeline(
    overrides: dict[str, Any] | None = None, dataset: str | None = None, lock_timeout_s: float = 3600.0
) -> dict:
    """Every DVC stage in dependency order, for every dataset of params.yaml or only `dataset`; DVC skips what is
    up to date. One markdown artifact per dataset.

    overrides: params.yaml values for this run only, e.g. {"dense.learning_rate": 1e-4}, or a dataset added for it
    ({"datasets.flowers.url": "/data/flowers.tgz"}). The run then is a DVC experiment made in a scratch clone, stage
    by stage: params.yaml, dvc.lock and the workspace stay untouched.
    dataset: one entry of `datasets` (default: all of them).
    lock_timeout_s: how long to wait while another DVC process (another flow run) holds the project's lock.
    """
    log = get_run_logger()
    root = project_root()
    overrides = overrides or {}
    datasets = [cfg.data.name for cfg in effective_configs(root, overrides, dataset)]
    log.info("project %s, datasets %s, overrides %s", root, ", ".join(datasets), overrides or "none")
    if overrides:
        experiment = experiment_name("pipeline")
        in_clone = experiment_run(root, experiment, overrides, lambda c: _of(datasets, stage_order(c)), lock_timeout_s)
        with in_clone as (clone, stages):
            results = {name: results_at(clone, name) for name in datasets}
    else:
        sync(root / PARAMS_FILE, root / DATASET_LIST)  # as `python -m pipeline.datasets`: no stop at `source`
        experiment, stages = None, run_stages(_of(datasets, stage_order(root)), root, lock_timeout_s)
        results = {name: results_at(root, name) for name in datasets}
    outcomes = {stage: r["outcome"] for stage, r in stages.items()}
    ran = [s for s, o in outcomes.items() if o == "ran"]
    log.info(
        "ran: %s; not recomputed: %s",
        ", ".join(ran) or "nothing",
        ", ".join(s for s in outcomes if s not in ran) or "nothing",
    )
    for name, result in results.items():
        create_markdown_artifact(
            pipeline_markdown(
                name,
                {s: stages[s] for s in _of([name], list(stages))},
                **result,
                experiment=experiment,
                overrides=overrides,
                root=root,
            ),
            key=slug(f"pipeline-{name}"),
            description=f"pipeline run on {name}",
        )
    seconds = {stage: r["seconds"] for stage, r in stages.items()}
    return {"project": str(root), "experiment": experiment, "stages": outcomes, "seconds": seconds, "datasets": results}


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
    ap.add_argument("--dataset", help="run this entry of params.yaml's datasets only (default: every dataset)")
    ap.add_argument(
        "--lock-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait while another DVC process holds the project's lock",
    )
    args = ap.parse_args(argv)
    overrides = {key: parse_value(value) for key, value in args.overrides}
    pipeline(overrides=overrides, dataset=args.dataset, lock_timeout_s=args.lock_timeout)


if __name__ == "__main__":
    main()
