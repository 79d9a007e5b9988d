"""The dataset names dvc.yaml's stages loop over: params.yaml's `datasets:` after every name was checked.

    python -m pipeline.datasets            # check params.yaml, update data/datasets.yaml (then: dvc repro)

DVC builds each stage's output paths from a dataset's name and deletes them before it runs the stage's command,
even under `dvc repro -s <stage>@<name>`, where no check of ours has run yet. So dvc.yaml does not loop over
params.yaml's names but over this list (its `vars:`), which only this module writes, and only with names that
passed the config's checks: an unchecked name never becomes a stage, a path or a shell argument. The default
dataset (data.name, checked to be one of them) is there too, for dvc.yaml's top-level metrics and plots. The source
stage (the first of every `dvc repro`) keeps the list in step with params.yaml; when a dataset was added or
removed it updates the list and stops, since DVC resolved this run's stages from the old list.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli import run_cli, setup_logging
from pipeline.config import ConfigError, load_params, parse_all, parse_config
from pipeline.files import log, text_kind, write_text
from pipeline.layout import DATASET_LIST, DATASET_LIST_KEY, DEFAULT_DATASET_KEY, PARAMS_FILE

_HEADER = (
    "# Written by `python -m pipeline.datasets` and the source stage from params.yaml's datasets:, each name checked\n"
    "# first. dvc.yaml's stages loop over this list: edit params.yaml, not this file.\n"
)


_LIST = text_kind("the dataset list pipeline.datasets writes", f"\n{DATASET_LIST_KEY}:\n")


class DatasetListChanged(ConfigError):
    """params.yaml's datasets differ from the list this `dvc repro` resolved its stages from."""


def checked(params: Path) -> tuple[list[str], str]:
    """params.yaml's dataset names and its default one (data.name), every dataset's values validated."""
    raw = load_params(params)
    return [cfg.data.name for cfg in parse_all(raw, str(params))], parse_config(raw, str(params)).data.name


def read_list(path: Path = DATASET_LIST) -> list[str]:
    """The names in the list file (written by write_list: one `- name` line each), [] when there is none."""
    if not path.is_file():
        return []
    return [line[2:].strip().strip("'") for line in path.read_text().splitlines() if line.startswith("- ")]


def _text(names: list[str], default: str) -> str:
    """Each name quoted: DVC reads this file as YAML 1.2, where `1e5`, `true` or `010` alone are no text."""
    quoted = "".join(f"- '{n}'\n" for n in names)  # a checked name holds no quote
    return _HEADER + f"{DEFAULT_DATASET_KEY}: '{default}'\n{DATASET_LIST_KEY}:\n" + quoted


def sync(params: Path, path: Path = DATASET_LIST) -> tuple[list[str], list[str]]:
    """Write params.yaml's checked names (and default) to the list file when they differ; returns (added, removed)."""
    (names, default), before = checked(params), read_list(path)
    if not path.is_file() or path.read_text() != _text(names, default):
        write_text(path, _text(names, default), _LIST)
    return [n for n in names if n not in before], [n for n in before if n not in names]


def require_in_step(params: Path, path: Path = DATASET_LIST) -> None:
    """sync(), then raise DatasetListChanged if a name was added or removed (the running `dvc repro` built its
    stages from the old list)."""
    added, removed = sync(params, path)
    if added or removed:
        change = ", ".join([f"added {added}"] * bool(added) + [f"removed {removed}"] * bool(removed))
        raise DatasetListChanged(
            f"{params}: datasets {change}; {path} now lists them, but this `dvc repro` built its stages from the "
            "old list: run it again"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=PARAMS_FILE, help=f"parameters file (default: {PARAMS_FILE})")
    args = ap.parse_args(argv)
    setup_logging()
    added, removed = sync(args.params)
    log.info("%s lists %s (added %s, removed %s)", DATASET_LIST, read_list(), added or "none", removed or "none")


if __name__ == "__main__":
    run_cli(main)
