"""What every command-line entry point shares: logging, the --params and --dataset options, and turning bad
input into a one-line message with exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.contracts import ExecutionRecord
from pipeline.files import JSON, Kind, OutputPathError, check_output
from pipeline.layout import PARAMS_FILE


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parser(
    doc: str | None, params_help: str = "parameters file", dataset_default: str = "data.name"
) -> argparse.ArgumentParser:
    """An argument parser with the module's docstring as help and the --params and --dataset options
    (`dataset_default`: what a command does without --dataset, for its help)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=PARAMS_FILE, help=f"{params_help} (default: {PARAMS_FILE})")
    ap.add_argument("--dataset", help=f"which entry of the parameters' datasets (default: {dataset_default})")
    return ap


def output(kind: Kind) -> Callable[[str], Path]:
    """An argparse type for an output path: one that holds what this output did not write (files.check_output)
    stops the command at parsing, before any work, with exit status 2 and the reason."""

    def checked(value: str) -> Path:
        try:
            return check_output(value, kind)
        except OutputPathError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return checked


def run_cli(main: Callable[[], object], *expected: type[Exception]) -> None:
    """Run a command's main(): bad params (ConfigError) and the `expected` input errors print their message and
    exit with status 2, without a traceback; anything else is a bug and keeps its traceback."""
    errors: tuple[type[Exception], ...] = (ConfigError, OutputPathError, *expected)
    try:
        main()
    except errors as err:  # OutputPathError: an output path that is taken
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, NotADirectoryError) as err:  # an input path that is not there, or not a folder
        print(f"error: {err.strerror}: {err.filename}", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def execution_record(path: Path) -> Iterator[dict[str, Any]]:
    """Facts about this execution that the block adds (speed, devices, sources: ExecutionRecord's fields), written
    to `path` with its wall time and its wall-clock start and end (ms since the epoch: what MLflow runs span) when
    the block succeeds. See layout.DatasetLayout.execution for why they live apart from the outputs."""
    check_output(path, JSON)  # before the block's work
    facts: dict[str, Any] = {}
    started_ms, start = time.time_ns() // 1_000_000, time.perf_counter()
    yield facts
    seconds = round(time.perf_counter() - start, 1)
    unknown = sorted(set(facts) - set(ExecutionRecord.model_fields))  # the record ignores them when read, not here
    if unknown:
        raise ValueError(f"{path}: {unknown} are no facts of an ExecutionRecord")
    timing = {"seconds": seconds, "started_ms": started_ms, "ended_ms": time.time_ns() // 1_000_000}
    ExecutionRecord.model_validate({**facts, **timing}).save(path)
