"""Which process a run belongs to, whether that process still runs, and ending the runs of processes that died.

Every run this project starts carries OWNER_TAG: its machine (host name, boot, pid namespace), pid and the pid's
start time, so a pid reused by another process is not taken for the owner. While it works, the owner refreshes
HEARTBEAT_TAG every HEARTBEAT_S. A RUNNING run's owner is dead when
  - it ran on this machine: its pid no longer runs with that start time (exact, at once);
  - it ran on another machine (whose pids can't be checked: another host, container or boot): none of its RUNNING
    runs had a heartbeat for LEASE_S. Ten missed heartbeats: a track that long without its server has failed.
`reap` ends the runs of dead owners FAILED and deletes the model versions they registered, whatever execution they
were. Standard library only: the training stages use it over REST, the track stage over MlflowClient.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from pipeline.files import pid_alive

OWNER_TAG = "pipeline.owner"  # "<pid> <start> <machine>"
HEARTBEAT_TAG = "pipeline.owner.heartbeat"  # ms since the epoch, by the owner's clock
HEARTBEAT_S = 60.0
LEASE_S = 600.0
PARENT_TAG = "mlflow.parentRunId"
# A live run's life: training -> trained (stage done) -> adopted (a track made it a child) | orphaned,
# or -> failed (the stage raised, or its process died: the run ends FAILED, never adopted).
STATE_TAG = "pipeline.live"
TRAINING, TRAINED, ADOPTED, ORPHANED, FAILED = "training", "trained", "adopted", "orphaned", "failed"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:  # no /proc (not Linux), or no such process
        return ""


@functools.cache
def machine() -> str:
    """What decides whether this process can check a pid: two containers can share a host name and a kernel but
    not a pid namespace, and a reboot starts pids afresh."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # pid:[4026531836]
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{_read('/proc/sys/kernel/random/boot_id')}/{namespace}"


def started(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22); "" where /proc can't say
    but the pid exists; None when no such process runs (a zombie has died too)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        state, *fields = stat[stat.rindex(")") + 2 :].split()  # the name (field 2) may hold spaces and parentheses
        return None if state in ("Z", "X") else fields[18]
    return "" if pid_alive(pid) else None


def owner_of(pid: int) -> str:
    """OWNER_TAG's value for process `pid`."""
    return f"{pid} {started(pid) or ''} {machine()}"


def claim() -> dict[str, str]:
    """The tags that make this process a run's owner."""
    return {OWNER_TAG: owner_of(os.getpid()), HEARTBEAT_TAG: str(now_ms())}


def alive(owner: str, heartbeat_ms: int, now: int) -> bool:
    """Whether the process named by an OWNER_TAG value still runs (see the module's docstring)."""
    pid, start, where = (owner.split(" ", 2) + ["", ""])[:3]
    if where != machine() or not pid.isdigit():
        return now - heartbeat_ms < LEASE_S * 1000
    running = started(int(pid))
    return running is not None and (running == start or "" in (running, start))


@contextlib.contextmanager
def heartbeat(beat: Callable[[str], object]) -> Iterator[None]:
    """`beat(now_ms)` every HEARTBEAT_S from a daemon thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # the block's own calls report a lost server, one way
                beat(str(now_ms()))

    threading.Thread(target=loop, daemon=True, name="pipeline-heartbeat").start()
    try:
        yield
    finally:
        stop.set()


class Run(NamedTuple):
    run_id: str
    tags: dict[str, str]


class Store(Protocol):
    """The calls `reap` makes, over MlflowClient (runs.ClientStore) or MLflow's REST API (live.RestStore)."""

    def runs(self, experiment_id: str, query: str) -> list[Run]: ...
    def versions(self, run_id: str) -> list[tuple[str, str]]: ...
    def delete_version(self, name: str, version: str) -> None: ...
    def set_tag(self, run_id: str, key: str, value: str) -> None: ...
    def fail(self, run_id: str) -> None: ...


def dead_runs(store: Store, experiment_id: str) -> list[Run]:
    """The RUNNING runs of `experiment_id` whose owner died, and the finished children of those that are parents
    (a dead track's execution is incomplete), children first."""
    running = store.runs(experiment_id, f"tags.`{OWNER_TAG}` IS NOT NULL and attributes.status = 'RUNNING'")
    beats: dict[str, int] = {}
    for run in running:
        beat = run.tags.get(HEARTBEAT_TAG, "")
        beats[run.tags[OWNER_TAG]] = max(beats.get(run.tags[OWNER_TAG], 0), int(beat) if beat.isdigit() else 0)
    now = now_ms()
    dead = [run for run in running if not alive(run.tags[OWNER_TAG], beats[run.tags[OWNER_TAG]], now)]
    ids = {run.run_id for run in dead}
    for parent in list(dead):
        children = store.runs(experiment_id, f"tags.`{PARENT_TAG}` = '{parent.run_id}'")
        dead += [c for c in children if c.run_id not in ids and c.tags.get(OWNER_TAG) == parent.tags[OWNER_TAG]]
    return sorted(dead, key=lambda run: PARENT_TAG not in run.tags)  # a parent ends last: a crash here redoes it


def reap(store: Store, experiment_id: str) -> list[str]:
    """End FAILED the runs of `experiment_id` whose owner died (dead_runs), after deleting the model versions they
    registered; a live run among them is tagged failed, so no track adopts it. Their ids."""
    dead = dead_runs(store, experiment_id)
    for run in dead:
        for name, version in store.versions(run.run_id):
            store.delete_version(name, version)
        if STATE_TAG in run.tags:
            store.set_tag(run.run_id, STATE_TAG, FAILED)
        store.fail(run.run_id)
    return [run.run_id for run in dead]
