"""The dataset names dvc.yaml's stages loop over: params.yaml's `datasets:` after every name was checked.

    python -m pipeline.datasets            # check params.yaml, update data/datasets.yaml (then: dvc repro)

DVC builds each stage's output paths from a dataset's name and deletes them before it runs the stage's command,
even under `dvc repro -s <stage>@<name>`, where no check of ours has run yet. So dvc.yaml does not loop over
params.yaml's names but over this list (its `vars:`), which only this module writes, and only with names that
passed the config's checks: an unchecked name never becomes a stage, a path or a shell argument. The source
stage (the first of every `dvc repro`) keeps the list in step with params.yaml; when a dataset was added or
removed it updates the list and stops, since DVC resolved this run's stages from the old list.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import run_cli, setup_logging
from pipeline.config import ConfigError, load_params, parse_all
from pipeline.files import log, write_text
from pipeline.layout import DATASET_LIST, DATASET_LIST_KEY, PARAMS_FILE

_HEADER = (
    "# Written by `python -m pipeline.datasets` and the source stage from params.yaml's datasets:, each name checked\n"
    "# first. dvc.yaml's stages loop over this list: edit params.yaml, not this file.\n"
)


class DatasetListChanged(ConfigError):
    """params.yaml's datasets differ from the list this `dvc repro` resolved its stages from."""


def checked_names(params: Path) -> list[str]:
    """params.yaml's dataset names, every dataset's values validated (a bad one: ConfigError)."""
    return [cfg.data.name for cfg in parse_all(load_params(params), str(params))]


def read_list(path: Path = DATASET_LIST) -> list[str]:
    """The names in the list file (written by write_list: one `- name` line each), [] when there is none."""
    if not path.is_file():
        return []
    return [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]


def write_list(names: list[str], path: Path = DATASET_LIST) -> None:
    write_text(path, _HEADER + f"{DATASET_LIST_KEY}:\n" + "".join(f"- {name}\n" for name in names))


def sync(params: Path, path: Path = DATASET_LIST) -> tuple[list[str], list[str]]:
    """Write params.yaml's checked names to the list file when they differ; returns (added, removed)."""
    names, before = checked_names(params), read_list(path)
    if names != before:
        write_list(names, path)
    return [n for n in names if n not in before], [n for n in before if n not in names]


def require_in_step(params: Path, path: Path = DATASET_LIST) -> list[str]:
    """sync(), then raise DatasetListChanged if the list had to change (the running `dvc repro` has stale stages)."""
    added, removed = sync(params, path)
    if added or removed:
        change = ", ".join([f"added {added}"] * bool(added) + [f"removed {removed}"] * bool(removed))
        raise DatasetListChanged(
            f"{params}: datasets {change}; {path} now lists them, but this `dvc repro` built its stages from the "
            "old list: run it again"
        )
    return read_list(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=PARAMS_FILE, help=f"parameters file (default: {PARAMS_FILE})")
    args = ap.parse_args(argv)
    setup_logging()
    added, removed = sync(args.params)
    log.info("%s lists %s (added %s, removed %s)", DATASET_LIST, read_list(), added or "none", removed or "none")


if __name__ == "__main__":
    run_cli(main)
