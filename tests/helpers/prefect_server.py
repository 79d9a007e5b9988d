"""A real Prefect server on loopback for the flow tests, the `prefect` CLI against it, and process workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from flows.dvc_commands import dvc_env
from pipeline.layout import stage_id
from tests.helpers.params import write_params
from tests.helpers.processes import start, stop
from tests.helpers.project import copy_repo, git
from tests.helpers.servers import free_port, wait_healthy

PREFECT = [sys.executable, "-m", "prefect"]


def prefect_cli(env: dict, cwd: Path, *args: str, timeout: float = 120) -> str:
    """`prefect <args>` in `cwd`; its output, or a failed assertion with it."""
    done = subprocess.run([*PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` with its own PREFECT_HOME under `home`; yields the environment that uses it."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_SITE_CACHE_DIR": str(home / "dvc_site"),
    }
    env.pop("PREFECT_API_URL", None)
    port, log = free_port(), home / "server.log"
    proc = start([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], home, log, env)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(f"{api}/health", proc, log)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        stop(proc, signal.SIGINT)  # its own process group; SIGINT is what stops it promptly


@contextlib.contextmanager
def workers(env: dict, pool: str, count: int, folder: Path) -> Iterator[list[Path]]:
    """`count` process workers on `pool`, each taking one flow run at a time (--limit 1) and polling every
    second; yields their log files; stopped afterwards."""
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    logs = [folder / f"worker-{i}.log" for i in range(count)]
    procs = [
        start([*PREFECT, "worker", "start", "--pool", pool, "--limit", "1", "--name", log.stem], folder, log, env)
        for log in logs
    ]
    try:
        yield logs
    finally:
        for proc in procs:
            stop(proc, signal.SIGINT)


def _dvc(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=dvc_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def scale_out_origin(tmp: Path, params: dict) -> tuple[Path, Path, Path]:
    """(workspace, bare git remote, DVC remote) under `tmp`: a copy of the project with `params`, run up to
    extract, its outputs and run-cache pushed to a local-folder DVC remote, committed (dvc.lock and the remote's
    config, so every clone has both) and cloned into the bare repo the trials clone from."""
    root, bare, remote = copy_repo(tmp / "workspace"), tmp / "origin.git", tmp / "dvc_remote"
    write_params(root / "params.yaml", params)
    git(root, "init", "-q")
    _dvc(root, "remote", "add", "-d", "shared", str(remote))
    _dvc(root, "repro", stage_id("extract", params["data"]["name"]))
    _dvc(root, "push", "--run-cache")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "features cached on the DVC remote")
    git(tmp, "clone", "-q", "--bare", str(root), str(bare))
    return root, bare, remote


def deploy_scale_out(env: dict, root: Path, bare: Path) -> dict:
    """Both pools, prefect.yaml's and prefect-scaleout.yaml's deployments, the trials cloning `bare`; the
    environment to use."""
    env = {**env, "PIPELINE_GIT_REMOTE": str(bare)}
    for pool in ("local-process", "checkout-process"):
        prefect_cli(env, root, "work-pool", "create", pool, "--type", "process")
    prefect_cli(env, root, "--no-prompt", "deploy", "--all")
    prefect_cli(env, root, "--no-prompt", "deploy", "--all", "--prefect-file", "prefect-scaleout.yaml")
    return env


def run_fanout(env: dict, root: Path, grid: list[str], worker_logs: list[Path]) -> list[dict]:
    """`python -m flows.fanout_sweep --grid ...` in `root`; the ranked rows it prints (a failure shows the
    workers' logs)."""
    args = [a for g in grid for a in ("--grid", g)]
    done = subprocess.run(
        [sys.executable, "-m", "flows.fanout_sweep", *args], cwd=root, env=env, capture_output=True, text=True
    )
    logs = "\n".join(log.read_text()[-4000:] for log in worker_logs)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}\n{logs}"
    return json.loads(done.stdout.strip().splitlines()[-1])
