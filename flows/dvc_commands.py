"""DVC as the flows drive it: stage order from DVC's own graph, `dvc` commands in a process of their own
(flows/dvc_runner.py), each stage's outcome from DVC's Python API, and a bounded wait while another DVC process
holds the project's locks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flows.dvc_runner import LOCKED

if TYPE_CHECKING:  # for the annotation only: DVC is imported where it is used
    from dvc.stage import Stage

RUNNER = Path(__file__).with_name("dvc_runner.py")


class DvcError(RuntimeError):
    """A dvc command failed, or another DVC process kept the project locked for too long."""


@dataclass(frozen=True)
class DvcResult:
    seconds: float
    lines: tuple[str, ...] = ()  # everything the command printed


def project_root(path: str | Path | None = None) -> Path:
    """The DVC project holding `path` (default: the working directory, which deployments set)."""
    from dvc.repo import Repo

    return Path(Repo.find_root(str(path or Path.cwd()))).resolve()


def _target(stage: Stage, root: Path) -> str:
    """The stage as `dvc repro` run in `root` names it: `name` in ./dvc.yaml, else `path:name` or the .dvc file
    (DVC's own `addressing` is relative to the caller's working directory)."""
    from dvc.stage import PipelineStage

    path = Path(stage.path).relative_to(root).as_posix()
    if isinstance(stage, PipelineStage):
        return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"
    return path


def stage_graph(root: Path) -> tuple[list[str], dict[str, set[str]]]:
    """Every stage, dependencies first, as DVC's own graph has them (ties keep their dvc.yaml order), and for
    each stage the stages whose outputs it reads directly."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        graph = repo.index.graph  # DVC's edges point from a stage to what it depends on
        order = nx.lexicographical_topological_sort(graph.reverse(copy=False), key=position.__getitem__)
        inputs = {_target(s, root): {_target(d, root) for d in graph.successors(s)} for s in graph}
        return [_target(s, root) for s in order], inputs


def stage_order(root: Path) -> list[str]:
    return stage_graph(root)[0]


def needed_for(root: Path, target: str) -> tuple[list[str], set[str]]:
    """The stages `target` needs, in order and itself last, and those whose outputs it reads directly."""
    order, inputs = stage_graph(root)
    needed, todo = set(), [target]
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(inputs[stage])
    return [s for s in order if s in needed], inputs[target]


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Stage commands say `python`: make that this interpreter, whatever PATH the worker was started with."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        **(extra or {}),
    }


def _run_once(
    args: list[str], root: Path, log: logging.Logger | logging.LoggerAdapter, env: dict[str, str]
) -> tuple[int, list[str]]:
    """Exit status and the output lines of flows/dvc_runner.py <args>."""
    lines = []
    # -P: by path, with nothing prepended to sys.path: the runner beside this file, nothing of `root` shadowing DVC
    with subprocess.Popen(
        [sys.executable, "-P", str(RUNNER), *args],
        cwd=root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:  # streamed, so a long stage shows progress in the flow run's logs
            if line := line.rstrip():
                lines.append(line)
                log.info(line)
    return proc.returncode, lines


def run_dvc(
    args: list[str],
    root: Path,
    log: logging.Logger | logging.LoggerAdapter,
    lock_timeout_s: float = 3600.0,
    poll_s: float = 5.0,
    env: dict[str, str] | None = None,
) -> DvcResult:
    """`dvc <args>` in `root` (or the runner's `repro-stage`); while another DVC process holds the project's
    locks (the runner exits LOCKED), wait up to `lock_timeout_s`."""
    start = time.monotonic()
    deadline = start + lock_timeout_s
    while True:
        rc, lines = _run_once(args, root, log, dvc_env(env))
        if rc == 0:
            return DvcResult(round(time.monotonic() - start, 1), tuple(lines))
        if rc != LOCKED:
            tail = "\n".join(lines[-40:])
            raise DvcError(f"`dvc {' '.join(args)}` failed in {root} (exit {rc}):\n{tail}")
        left = deadline - time.monotonic()
        if left <= 0:
            blocker = "\n".join(lines[-6:])  # DVC's lock error, naming the blocking process, comes last
            raise DvcError(
                f"`dvc {' '.join(args)}`: {root} is still locked by another DVC process after "
                f"{lock_timeout_s:.0f} s (another flow run or dvc command?):\n{blocker}"
            )
        log.warning("another DVC process is working on %s; waiting for its lock (%.0f s left)", root, left)
        time.sleep(min(poll_s, max(left, 0.1)))


def reproduce_stage(
    stage: str,
    root: Path,
    log: logging.Logger | logging.LoggerAdapter,
    lock_timeout_s: float = 3600.0,
    pull: list[str] | None = None,
    env: dict[str, str] | None = None,
    poll_s: float = 5.0,
) -> tuple[str, float]:
    """`dvc repro --single-item [pull flags] <stage>` through DVC's Python API: (its outcome, "ran" | "skipped" |
    "restored" | "pulled" (flows/dvc_runner.outcome), and the command's seconds, DVC's own checks included)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "outcome.json"
        args = ["repro-stage", *(pull or []), "--result", str(result), stage]
        done = run_dvc(args, root, log, lock_timeout_s, poll_s, env)
        return json.loads(result.read_text())["outcome"], done.seconds


def is_up_to_date(
    stage: str, root: Path, log: logging.Logger | logging.LoggerAdapter, lock_timeout_s: float = 3600.0
) -> tuple[bool, float]:
    """(whether `dvc status --json <stage>` finds nothing changed, its seconds): DVC's own machine-readable answer
    to whether `dvc repro` would run the stage now."""
    result = run_dvc(["status", "--json", stage], root, log, lock_timeout_s)
    report = next((line for line in reversed(result.lines) if line.startswith("{")), None)
    if report is None:
        raise DvcError(f"`dvc status --json {stage}` printed no JSON in {root}:\n" + "\n".join(result.lines[-20:]))
    return json.loads(report) == {}, result.seconds
