"""Head-only sweep: the dense head trained once per setting on the same cached features, each setting a DVC
experiment made stage by stage up to train_dense (as the pipeline flow's overrides), so extract (and everything
before it) is reused, never recomputed.

    python -m flows.dense_sweep --grid dense.learning_rate=1e-5,2e-5,1e-4 --grid dense.units=128,256
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.artifacts import read_json_at, sweep_markdown
from flows.dvc_commands import needed_for, project_root
from flows.overrides import head_settings, parse_assignment, parse_value
from flows.tasks import experiment_name, experiment_run, slug
from pipeline.layout import SUMMARY_FILE, DatasetLayout, stage_id


@flow(name="dense-head-sweep")
def dense_sweep(grid: dict[str, list[Any]], lock_timeout_s: float = 3600.0) -> list[dict]:
    """One DVC experiment up to train_dense per combination of `grid`, e.g.
    {"dense.learning_rate": [1e-4, 1e-3], "dense.dropout": [0.3, 0.5]} (4 settings); compared on validation
    metrics (the test split stays for the final evaluation). lock_timeout_s: as in the pipeline flow."""
    log = get_run_logger()
    root = project_root()
    name, settings = head_settings(root, grid)
    prefix = experiment_name("sweep")
    log.info(
        "project %s, dataset %s: %d settings as experiments %s-1..%d", root, name, len(settings), prefix, len(settings)
    )

    def up_to_the_head(clone: Path) -> list[str]:
        return needed_for(clone, stage_id("train_dense", name))[0]

    rows = []
    for i, overrides in enumerate(settings, 1):
        experiment = f"{prefix}-{i}"
        with experiment_run(root, experiment, overrides, up_to_the_head, lock_timeout_s) as (clone, stages):
            summary = read_json_at(clone, DatasetLayout.of(name).model_dir("dense") / SUMMARY_FILE)
        assert summary is not None, f"experiment {experiment} has no dense summary"  # its train_dense just ran
        extract = stages.get(stage_id("extract", name), {}).get("outcome")
        rows.append({"overrides": overrides, "experiment": experiment, "summary": summary, "extract": extract})
        log.info(
            "%s %s: val_accuracy %.4f, val_loss %.4f",
            experiment,
            overrides,
            summary["val_accuracy"],
            summary["val_loss"],
        )
    create_markdown_artifact(
        sweep_markdown(name, rows), key=slug(f"dense-sweep-{name}"), description=f"dense-head sweep on {name}"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--grid",
        action="append",
        required=True,
        type=parse_assignment,
        metavar="KEY=V1,V2,...",
        help="values of one dense.* parameter (repeatable: every combination is trained)",
    )
    ap.add_argument(
        "--lock-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait while another DVC process holds the project's lock",
    )
    args = ap.parse_args(argv)
    grid = {key: [parse_value(v) for v in values.split(",")] for key, values in args.grid}
    dense_sweep(grid=grid, lock_timeout_s=args.lock_timeout)


if __name__ == "__main__":
    main()
