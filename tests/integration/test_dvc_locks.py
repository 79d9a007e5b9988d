"""The flows' bounded wait on DVC's locks, with real `dvc` processes: a second command waits while the first
holds them, and gives up with a message once the wait is over."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc.lock import Lock

from flows.dvc_commands import DvcError, reproduce_stage, run_dvc


@pytest.fixture
def tiny_dvc_project(tmp_path) -> Path:
    """`slow` writes a.txt for 6 s (time for a second process to collide with it); `after` reads it."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    stages = {
        "slow": {"cmd": "sleep 6 && echo a > a.txt", "outs": ["a.txt"]},
        "after": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return tmp_path


def test_a_second_dvc_process_waits_for_the_first(tiny_dvc_project, caplog):
    root, log = tiny_dvc_project, logging.getLogger("test_dvc_locks")
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", "slow"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        rwlock, deadline = root / ".dvc" / "tmp" / "rwlock", time.monotonic() + 30
        while not (rwlock.exists() and "a.txt" in rwlock.read_text()):  # `slow` is writing a.txt
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        with caplog.at_level(logging.INFO, logger="test_dvc_locks"):
            outcome, _ = reproduce_stage("after", root, log, lock_timeout_s=60, poll_s=0.5)
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0 and outcome == "ran"
    assert any("waiting for its lock" in r.getMessage() for r in caplog.records)
    assert (root / "b.txt").read_text() == "a\n"


def test_waiting_for_the_lock_is_bounded(tiny_dvc_project):
    lock = Lock(str(tiny_dvc_project / ".dvc" / "tmp" / "lock"))
    lock.lock()  # held as a running `dvc` process holds it
    try:
        with pytest.raises(DvcError, match="still locked by another DVC process"):
            run_dvc(
                ["repro", "--single-item", "slow"],
                tiny_dvc_project,
                logging.getLogger("test_dvc_locks"),
                lock_timeout_s=2,
                poll_s=0.5,
            )
    finally:
        lock.unlock()
