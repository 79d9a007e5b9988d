"""Fault suite, tracking state: runs left RUNNING by processes that died (a training stage or a track killed -9) are
ended FAILED by the next training stage or track, whatever was committed in between, and the model versions a dead
track registered are deleted; runs whose process still runs are never touched, so a second track of the same
execution leaves the first's work alone and both end correct. Each test has its own `mlflow server`."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.files import read_json, sha256_file
from pipeline.layout import DatasetLayout
from pipeline.tracking.lineage import EXECUTION_TAG
from pipeline.tracking.owner import (
    FAILED,
    HEARTBEAT_TAG,
    LEASE_S,
    OWNER_TAG,
    STATE_TAG,
    TRAINING,
    heartbeat,
    now_ms,
    owner_of,
    started,
)
from pipeline.tracking.registry import DATA_TAG, SERVED_TAG, VAL_LOSS_TAG, served_name
from tests.helpers.params import deep_merge, write_params
from tests.helpers.pipeline import stage_command
from tests.helpers.processes import env, kill_when, start, stop
from tests.helpers.project import git
from tests.helpers.servers import start_mlflow_server

pytestmark = pytest.mark.servers
ELSEWHERE = "7 1234 another-host/boot/pid:[1]"  # a process of another machine: only its heartbeat tells


@pytest.fixture
def server(tmp_path):
    (tmp_path / "server").mkdir()
    proc, url = start_mlflow_server(tmp_path / "server")
    yield url
    stop(proc, timeout=15)


def _copy(tiny_project, dest: Path) -> tuple[Path, DatasetLayout]:
    root = shutil.copytree(tiny_project.root, dest, symlinks=True)
    return root, DatasetLayout.of(tiny_project.cfg.data.name, root)


def _stage(stage: str, root: Path, layout: DatasetLayout, url: str, log: Path) -> subprocess.Popen:
    """`stage`'s command as dvc.yaml runs it, in the project `root`, against the server `url`."""
    module, args = stage_command(stage, layout)
    cmd = [sys.executable, "-m", module, "--params", str(root / "params.yaml"), *args]
    return start(cmd, root, log, env(MLFLOW_TRACKING_URI=url))


def _track(root: Path, layout: DatasetLayout, url: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline.stages.track", "--params", str(root / "params.yaml")]
    cmd += ["--data", str(layout.root), "--lock", str(root / "dvc.lock"), "--out", str(out)]
    return start(cmd, root, out.with_suffix(".log"), env(MLFLOW_TRACKING_URI=url))


def _ok(proc: subprocess.Popen, log: Path) -> str:
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


def _runs(client: MlflowClient, name: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(name)
    return {} if experiment is None else {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


def _versions(client: MlflowClient, name: str) -> list:
    return client.search_model_versions(f"name = '{name}-classifier'")


def _polled(check):
    """`check`, polled every 0.2 s: the server and the stage share two cores with the poller."""
    return lambda: time.sleep(0.2) or check()


def _dead_owner() -> str:
    """OWNER_TAG of a real process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = owner_of(proc.pid)
    proc.kill()
    proc.wait()
    return owner


def _leftover(client: MlflowClient, experiment: str, owner: str | None, beat: int, **tags) -> str:
    """A RUNNING run as a process leaves it: owned by `owner` (None: no owner tag) with its last heartbeat `beat`."""
    tags |= {OWNER_TAG: owner, HEARTBEAT_TAG: str(beat)} if owner else {}
    return client.create_run(experiment, tags=tags).info.run_id


def _register(client: MlflowClient, name: str, run_id: str, val_loss: str, data: str = "") -> str:
    for model in {name, served_name(name)} - {m.name for m in client.search_registered_models()}:
        client.create_registered_model(model)
    served = client.create_model_version(served_name(name), f"runs:/{run_id}/served", run_id)
    tags = {"head": "finetune", "shipped": "dense", VAL_LOSS_TAG: val_loss, DATA_TAG: data, "test_accuracy": "1"}
    tags[SERVED_TAG] = served.version  # a shipped version beside its served one, tagged as the track stage does
    return client.create_model_version(name, f"runs:/{run_id}/finetune", run_id, tags=tags).version


def test_a_training_stage_killed_mid_logging_is_ended_by_its_rerun(tiny_project, tmp_path, server):
    root, layout = _copy(tiny_project, tmp_path / "project")
    client, name = MlflowClient(server), tiny_project.cfg.data.name
    long = deep_merge(tiny_project.params, {"dense": {"epochs": 10000, "patience": 10000}})
    write_params(root / "params.yaml", long)
    layout.execution("train_dense").unlink()
    killed = _stage("train_dense", root, layout, server, tmp_path / "killed.log")
    logging = _polled(lambda: any(r.data.metrics for r in _runs(client, name).values()))
    assert kill_when(killed, logging, timeout=240), (tmp_path / "killed.log").read_text()[-3000:]
    (live,) = _runs(client, name).values()
    assert live.info.status == "RUNNING" and live.data.tags[STATE_TAG] == TRAINING
    # A dead track's leftover in the same experiment: the stage's reap (over REST) deletes its version too.
    track = _leftover(client, live.info.experiment_id, _dead_owner(), now_ms(), **{EXECUTION_TAG: "earlier"})
    _register(client, f"{name}-classifier", track, "0.5")

    write_params(root / "params.yaml", tiny_project.params)
    git(root, "commit", "-q", "--allow-empty", "-m", "later work")  # whatever was committed in between
    output = _ok(_stage("train_dense", root, layout, server, tmp_path / "rerun.log"), tmp_path / "rerun.log")
    runs = _runs(client, name)
    assert runs[live.info.run_id].info.status == "FAILED" and runs[live.info.run_id].data.tags[STATE_TAG] == FAILED
    assert runs[track].info.status == "FAILED" and not _versions(client, name)
    rerun = runs[read_json(layout.execution("train_dense"))["mlflow_live_run_id"]]
    assert rerun.info.status == "FINISHED" and len(runs) == 3
    assert "ended 2 run(s) of processes that died FAILED" in output, output


def test_a_track_killed_then_a_commit_then_a_rerun_ends_the_crashed_runs(tiny_project, tmp_path, server):
    root, layout = _copy(tiny_project, tmp_path / "project")
    client, name = MlflowClient(server), tiny_project.cfg.data.name
    crashed = _track(root, layout, server, tmp_path / "crashed.json")
    assert kill_when(crashed, _polled(lambda: bool(_versions(client, name))), timeout=240)
    left = {i for i, r in _runs(client, name).items() if r.info.status == "RUNNING"}
    assert left and len(_versions(client, name)) == 1

    git(root, "commit", "-q", "--allow-empty", "-m", "another commit: another execution id")
    output = _ok(_track(root, layout, server, tmp_path / "rerun.json"), tmp_path / "rerun.log")
    runs, rerun = _runs(client, name), read_json(tmp_path / "rerun.json")
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    (crashed_execution,) = {runs[i].data.tags[EXECUTION_TAG] for i in left}
    assert crashed_execution != runs[rerun["parent_run_id"]].data.tags[EXECUTION_TAG]
    # All of the crashed track's runs, the child that had finished before the kill too.
    crashed_runs = {i for i, r in runs.items() if r.data.tags[EXECUTION_TAG] == crashed_execution}
    assert crashed_runs >= left and {runs[i].info.status for i in crashed_runs} == {"FAILED"}
    assert {int(v.version) for v in _versions(client, name)} == set(rerun["model_versions"].values())
    assert f"ended {len(crashed_runs)} run(s) of processes that died FAILED" in output, output


def _pause_when(proc: subprocess.Popen, ready) -> bool:
    """SIGSTOP `proc`'s process group as soon as `ready()`; False if it ended first."""
    while proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGSTOP)
            return True
    return False


def test_a_second_track_of_the_same_execution_leaves_the_first_alone(tiny_project, tmp_path, server):
    root, layout = tiny_project.root, tiny_project.layout
    client, name = MlflowClient(server), tiny_project.cfg.data.name
    first = _track(root, layout, server, tmp_path / "first.json")
    try:
        # Paused mid-logging (its dense version registered): alive, RUNNING, while the second runs from start to end.
        assert _pause_when(first, _polled(lambda: bool(_versions(client, name)))), "the first track ended first"
        paused = {i for i, r in _runs(client, name).items() if r.info.status == "RUNNING"}
        _ok(_track(root, layout, server, tmp_path / "second.json"), tmp_path / "second.log")
        runs = _runs(client, name)
        assert paused and {runs[i].info.status for i in paused} == {"RUNNING"}
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _ok(first, tmp_path / "first.log")
    runs = _runs(client, name)
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and len(runs) == 6
    assert len({r.data.tags[EXECUTION_TAG] for r in runs.values()}) == 1
    for record in (read_json(tmp_path / "first.json"), read_json(tmp_path / "second.json")):
        for version in record["model_versions"].values():  # none deleted under either
            assert client.get_model_version(record["registered_model"], str(version)).run_id in runs
        assert {record["parent_run_id"], *record["child_run_ids"].values()} <= set(runs)
    assert client.get_model_version_by_alias(f"{name}-classifier", "champion").run_id in runs


def test_only_runs_whose_process_is_gone_are_ended(tiny_project, tmp_path, server):
    client, name = MlflowClient(server), tiny_project.cfg.data.name
    experiment = client.create_experiment(name)
    model = f"{name}-classifier"
    stale, fresh = now_ms() - int(LEASE_S * 1000) - 1, now_ms()
    # The best version so far (on the same validation split), of an earlier execution; the alias on a dead track's.
    earlier, split = client.create_run(experiment).info.run_id, sha256_file(tiny_project.layout.manifest)
    best = _register(client, model, earlier, "0.0", split)
    client.set_terminated(earlier)
    dead = _leftover(client, experiment, _dead_owner(), fresh)
    client.set_registered_model_alias(model, "champion", _register(client, model, dead, "0.0", split))
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        alive = _leftover(client, experiment, owner_of(sleeper.pid), stale)  # no heartbeat needed: its pid runs
        reused = _leftover(client, experiment, f"{sleeper.pid} 1 {owner_of(sleeper.pid).split(' ', 2)[2]}", fresh)
        away = _leftover(client, experiment, ELSEWHERE, fresh)
        gone = _leftover(client, experiment, ELSEWHERE.replace("7", "8", 1), stale)
        child = _leftover(client, experiment, ELSEWHERE.replace("7", "8", 1), stale, **{"mlflow.parentRunId": gone})
        client.set_terminated(child)
        unowned = _leftover(client, experiment, None, stale)  # a sweep's parent, a run by hand: not ours to end
        output = _ok(_track(tiny_project.root, tiny_project.layout, server, tmp_path / "m.json"), tmp_path / "m.log")
        runs = _runs(client, name)
        kept = (alive, away, unowned)
        assert {i: runs[i].info.status for i in kept} == dict.fromkeys(kept, "RUNNING")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert {runs[i].info.status for i in (dead, reused, gone, child)} == {"FAILED"}
    assert "ended 4 run(s) of processes that died FAILED" in output, output
    assert {v.run_id for v in _versions(client, name)} == {
        earlier,
        *read_json(tmp_path / "m.json")["child_run_ids"].values(),
    }
    champion = read_json(tmp_path / "m.json")["champion"]
    assert champion["version"] == int(best) and not champion["changed"]  # the alias went with the dead version: back
    assert client.get_model_version_by_alias(model, "champion").version == best


def test_a_killed_process_is_dead_before_it_is_reaped():
    proc = subprocess.Popen(["sleep", "600"])
    assert started(proc.pid) and owner_of(proc.pid).startswith(f"{proc.pid} {started(proc.pid)} ")
    proc.kill()
    while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(") ")[2][0] != "Z":  # killed, not yet reaped
        time.sleep(0.01)
    assert started(proc.pid) is None
    proc.wait()


def test_the_heartbeat_beats_until_its_block_ends(monkeypatch):
    monkeypatch.setattr("pipeline.tracking.owner.HEARTBEAT_S", 0.01)
    beats: list[str] = []
    with heartbeat(beats.append):
        (thread,) = [t for t in threading.enumerate() if t.name == "pipeline-heartbeat"]
        while len(beats) < 3:
            time.sleep(0.01)
    thread.join(timeout=60)  # it ends with the block
    assert not thread.is_alive()
    assert all(b.isdigit() for b in beats)
