"""The sweep's MLflow runs through `python -m pipeline.tracking.sweep` in a subprocess: the flows stay free of
MLflow (and its import time), and the trial logs with the code of its own checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from flows.artifacts import json_object
from flows.dvc_commands import dvc_env


class SweepTrackingError(RuntimeError):
    """The tracking command failed (server unreachable, unknown parent run)."""


def sweep_tracking(args: list[str], root: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One `pipeline.tracking.sweep` command in `root`, with `env` added to the environment; the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.sweep", *args],
        cwd=root,
        env=dvc_env(env),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        failed = f"pipeline.tracking.sweep {args[0]} failed (exit {done.returncode})"
        raise SweepTrackingError(f"{failed}: {done.stderr[-2000:]}")
    return json_object(done.stdout.strip().splitlines()[-1], f"pipeline.tracking.sweep {args[0]}'s output")
