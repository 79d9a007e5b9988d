"""Flows through a real Prefect server: prefect.yaml's deployments run by a process worker on a temporary copy
of the project with the tiny synthetic dataset. DVC's skip logic, per-run overrides as DVC experiments, the
head-only sweep, the MLflow runs of a deployment run, and outputs shared through a DVC remote."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import dvc.api
import pytest
from dvc.lock import Lock
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.dvc_commands import stage_order
from pipeline.layout import DatasetLayout, stage_id
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.prefect_server import prefect_cli, prefect_server
from tests.helpers.project import copy_repo, git

POOL = "local-process"  # prefect.yaml's work pool
NAME = "orchestrated"  # own MLflow experiment: the MLflow server is shared by the whole session


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    with prefect_server(tmp_path_factory.mktemp("prefect_home")) as env:
        yield env


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_env, mlflow_server) -> tuple[Path, dict[str, str]]:
    """A committed copy of the project (experiments start from a commit), its work pool and deployments."""
    tmp = tmp_path_factory.mktemp("flows")
    root = copy_repo(tmp / "project")
    archive = zip_dir(make_dataset(tmp / "src" / NAME), tmp / f"{NAME}.zip")
    write_params(root / "params.yaml", tiny_params({"data": {"name": NAME, "url": str(archive)}}))
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tiny project"]):
        git(root, *args)
    env = {**prefect_env, "MLFLOW_TRACKING_URI": mlflow_server}
    prefect_cli(env, root, "work-pool", "create", POOL, "--type", "process")  # prefect.yaml's one pool
    deployed = prefect_cli(env, root, "--no-prompt", "deploy", "--all")
    assert "WARNING" not in deployed, deployed  # one machine: no scale-out placeholder left unresolved
    return root, env


def _run(project: tuple[Path, dict], deployment: str, **params) -> tuple[str, str]:
    """`prefect deployment run`, then one worker pass; (flow run id, the run's markdown artifact)."""
    root, env = project
    args = [a for key, value in params.items() for a in ("--param", f"{key}={json.dumps(value)}")]
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", prefect_cli(env, root, "deployment", "run", deployment, *args))[1]
    worker = prefect_cli(env, root, "worker", "start", "--pool", POOL, "--run-once", "--limit", "1", timeout=300)
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
        )
    assert state.is_completed(), f"{state}\n{worker[-8000:]}"
    assert len(artifacts) == 1
    return run_id, artifacts[0].data


def _stage_rows(report: str) -> dict[str, tuple[str, str]]:
    """The stage -> (outcome, seconds) table of a pipeline run's artifact."""
    rows = re.findall(r"^\| ([\w@.-]+) \| ([^|]+) \| ([^|]*) \|$", report, re.MULTILINE)
    return {s: (o, sec) for s, o, sec in rows if s != "stage"}


def _stages(report: str) -> dict[str, str]:
    return {stage: outcome for stage, (outcome, _) in _stage_rows(report).items()}


def _task_states(env: dict, run_id: str) -> dict[str, str]:
    """task run name (the stage) -> its state's name, as the Prefect UI shows it."""
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])))
    return {t.name: t.state.name for t in tasks}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture(scope="module")
def first_run(project) -> tuple[str, str, dict[str, int]]:
    """The default deployment on the fresh copy, then committed as DVC suggests; (run id, report, feature mtimes)."""
    root, _ = project
    run_id, report = _run(project, "pipeline/default")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first pipeline run")
    return run_id, report, _mtimes(DatasetLayout.of(NAME, root).features)


@pytest.mark.servers
def test_deployment_runs_every_stage_and_reports_both_heads(project, first_run):
    root, _ = project
    _, report, _ = first_run
    assert _stages(report) == {stage: "ran" for stage in stage_order(root)}
    assert all(float(seconds) > 0 for _, seconds in _stage_rows(report).values())
    metrics = json.loads(DatasetLayout.of(NAME, root).metrics.read_text())
    for head in ("dense", "finetune"):
        assert re.search(rf"^\| {head} \| {metrics[head]['accuracy']:.4g} \|", report, re.MULTILINE)


@pytest.mark.servers
def test_deployment_run_is_logged_to_mlflow(project, first_run, mlflow_server):
    root, _ = project
    run_id, report, _ = first_run
    record = json.loads(DatasetLayout.of(NAME, root).mlflow_record.read_text())
    runs = MlflowClient(mlflow_server).search_runs(
        [record["experiment_id"]], f"tags.`prefect.flow_run_id` = '{run_id}'"
    )
    parent = record["parent_run_id"]
    assert {r.info.run_id for r in runs} == {parent, *record["child_run_ids"].values()}
    children = {r.info.run_id: r for r in runs if r.info.run_id != parent}
    assert set(record["child_run_ids"]) == {"dense", "finetune"}
    assert all(children[i].info.run_name.split()[0] == head for head, i in record["child_run_ids"].items())
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in children.values())
    assert f"{mlflow_server}/#/experiments/{record['experiment_id']}/runs/{parent}" in report


@pytest.mark.servers
def test_unchanged_project_recomputes_nothing(project, first_run):
    root, env = project
    run_id, report = _run(project, "pipeline/default", dataset=NAME)  # its one dataset, named
    outcomes = _stages(report)
    assert outcomes.pop("source") == "ran"  # the params and source check runs every time (always_changed)
    assert set(outcomes.values()) == {"skipped (unchanged)"}
    # only what ran is a task: no green "Completed" for an unchanged stage, and the UI counts 1 Completed, not 8
    assert _task_states(env, run_id) == {"source": "Completed"}
    assert _mtimes(DatasetLayout.of(NAME, root).features) == first_run[2]


@pytest.mark.servers
def test_override_reruns_only_what_depends_on_it_as_an_experiment(project, first_run):
    root, env = project
    before = {f: (root / f).read_bytes() for f in ("params.yaml", "dvc.lock")}
    lock = Lock(str(root / ".dvc" / "tmp" / "lock"))
    lock.lock()  # held as a `dvc repro` in the workspace holds it: the experiment's clone has its own
    try:
        run_id, report = _run(project, "pipeline/default", overrides={"dense.learning_rate": 0.05}, lock_timeout_s=20)
    finally:
        lock.unlock()
    stages = _stages(report)
    ran = {s for s, outcome in stages.items() if outcome == "ran"}
    assert ran == {"source", *(stage_id(s, NAME) for s in ("train_dense", "train_finetune", "evaluate", "track"))}
    assert stages[stage_id("extract", NAME)] == "skipped (unchanged)"
    assert all(float(seconds) > 0 for _, seconds in _stage_rows(report).values())  # each stage its own command
    assert {f: (root / f).read_bytes() for f in before} == before  # the workspace is untouched
    assert _mtimes(DatasetLayout.of(NAME, root).features) == first_run[2]
    experiment = re.search(r"DVC experiment `([\w-]+)`", report)[1]
    # each stage its own task with the plain run's state names, between the checkout and the saved experiment
    states = _task_states(env, run_id)
    assert states.pop(f"check out {experiment}") == states.pop(f"save experiment {experiment}") == "Completed"
    assert states == {s: "Completed" for s in ran}  # an unchanged stage is in the artifact, not a task
    assert dvc.api.params_show(repo=str(root), rev=experiment)["dense"]["learning_rate"] == 0.05
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=root, env=env, capture_output=True, text=True
    )
    assert experiment in listed.stdout.split()  # `dvc exp show` / `dvc exp apply` in the workspace know it
    assert list((root / ".dvc" / "tmp").glob(f"exp-{experiment}-*")) == []  # the scratch clone is gone


@pytest.mark.servers
def test_sweep_trains_the_head_per_setting_on_the_same_features(project, first_run):
    root, _ = project
    _, report = _run(project, "dense-head-sweep/learning-rates", grid={"dense.learning_rate": [0.05, 0.002]})
    experiments = re.findall(r"`(sweep-[0-9a-f]{8}-\d)`", report.split("Best by")[0])
    assert len(experiments) == 2
    assert report.count("skipped (unchanged)") == 2  # extract, once per setting
    assert _mtimes(DatasetLayout.of(NAME, root).features) == first_run[2]
    rates = {dvc.api.params_show(repo=str(root), rev=e)["dense"]["learning_rate"] for e in experiments}
    assert rates == {0.05, 0.002}


@pytest.mark.servers
def test_dvc_remote_push_then_pull_into_a_fresh_clone(project, first_run, tmp_path):
    """The scale-out path that runs here: outputs travel through a DVC remote (a local folder)."""
    root, env = project

    def dvc(cwd: Path, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    remote, clone = tmp_path / "remote", tmp_path / "clone"
    dvc(root, "remote", "add", "--local", "-f", "shared", str(remote))  # --local: kept out of git
    dvc(root, "push", "-r", "shared")
    git(tmp_path, "clone", "-q", str(root), str(clone))
    dvc(clone, "remote", "add", "--local", "shared", str(remote))
    dvc(clone, "pull", "-r", "shared")
    assert json.loads(dvc(clone, "status", "--json")) == {"source": ["always changed"]}
    for rel in ("features/train.npy", "models/dense/model.keras", "models/finetune/model.keras"):
        assert (clone / "data" / NAME / rel).read_bytes() == (root / "data" / NAME / rel).read_bytes()
