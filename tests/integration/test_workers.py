"""Past one workspace: a fanned-out sweep on a real Prefect server, one process pool and two workers. Each trial
clones a local bare git repo into its worker's scratch folder and gets the cached features from a local-folder
DVC remote; the two trials run at the same time, log MLflow child runs under one parent run and push DVC
experiments named after them to the bare repo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from pipeline.layout import SUMMARY_FILE, DatasetLayout
from pipeline.params_file import parse_params
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params
from tests.helpers.prefect_server import deploy_scale_out, prefect_server, run_fanout, scale_out_origin, workers
from tests.helpers.project import git

POOL = "checkout-process"  # prefect.yaml's pool of the trial deployment
NAME = "scaled"  # own MLflow experiment on the session's shared MLflow server
ARTIFACT = f"dense-sweep-fanout-{NAME}"


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_server) -> Iterator[tuple[dict, list[dict], set[Path], Path, Path]]:
    """A 2-setting fanned-out sweep with two workers on one pool, on the tiny project whose features wait on
    the DVC remote; (env, its ranked rows, the files the trials pushed to the DVC remote, workspace, bare repo)."""
    tmp = tmp_path_factory.mktemp("scale_out")
    archive = zip_dir(make_dataset(tmp / "src" / NAME), tmp / f"{NAME}.zip")
    root, bare, remote = scale_out_origin(tmp, tiny_params({"data": {"name": NAME, "url": str(archive)}}))
    before = _files(remote)
    with prefect_server(tmp / "prefect_home") as env:
        env = deploy_scale_out({**env, "MLFLOW_TRACKING_URI": mlflow_server}, root, bare)
        with workers(env, POOL, 2, tmp) as logs:
            rows = run_fanout(env, root, ["dense.learning_rate=0.05,0.002"], logs)
        yield env, rows, _files(remote) - before, root, bare


@pytest.mark.servers
def test_two_workers_run_two_trials_at_once_in_their_own_checkouts(sweep):
    env, rows, *_ = sweep
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(row["flow_run_id"])) for row in rows]
    assert all(run.state.is_completed() for run in runs), [run.state for run in runs]
    first, second = runs
    assert first.start_time < second.end_time and second.start_time < first.end_time  # they overlapped
    checkouts = {row["tags"]["checkout"] for row in rows}
    assert len(checkouts) == 2  # each trial in its own clone (the worker's scratch folder)


@pytest.mark.servers
def test_trials_reuse_the_cached_features_and_push_their_heads(sweep):
    _, rows, pushed, *_ = sweep
    for row in rows:
        stages = {k.removeprefix("stage."): v for k, v in row["tags"].items() if k.startswith("stage.")}
        assert stages == {
            "source": "ran",  # checks params.yaml; always runs
            "download": "skipped",  # unchanged; its data stays on the remote
            "prepare": "skipped",
            "extract": "pulled",  # the cached features, never recomputed
            "train_dense": "ran",
        }
    assert len(pushed) >= 2  # a dense model per setting (and their run-cache entries) reached the DVC remote


@pytest.mark.servers
def test_trials_are_mlflow_children_of_one_parent_ranked_by_val_loss(sweep, mlflow_server):
    _, rows, *_ = sweep
    parents = {row["tags"]["mlflow.parentRunId"] for row in rows}
    assert len(parents) == 1
    client = MlflowClient(mlflow_server)
    parent = client.get_run(parents.pop())
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.info.run_id for c in children} == {row["run_id"] for row in rows}
    assert {float(c.data.params["dense.learning_rate"]) for c in children} == {0.05, 0.002}
    losses = [row["metrics"]["val_loss"] for row in rows]
    assert losses == sorted(losses)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_run_id"] == rows[0]["run_id"]


@pytest.mark.servers
def test_the_sweep_artifact_ranks_the_trials_by_val_loss(sweep):
    env, rows, *_ = sweep
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT])))
    ranked = re.findall(r"^\| (\d) \| `([\w-]+)` \|", artifact.data, re.MULTILINE)
    assert ranked == [(str(rank), row["setting"]) for rank, row in enumerate(rows, 1)]
    assert all(row["tags"]["checkout"] in artifact.data for row in rows)
    assert all(f"| `{row['experiment']}` |" in artifact.data for row in rows)  # the DVC experiment column


@pytest.mark.servers
def test_each_trial_is_a_dvc_experiment_on_the_git_remote(sweep):
    _, rows, _, root, bare = sweep
    refs = dict(line.split("\t")[::-1] for line in git(root, "ls-remote", str(bare), "refs/exps/*").splitlines())
    by_name = {ref.rsplit("/", 1)[1]: ref for ref in refs}
    assert set(by_name) == {row["experiment"] for row in rows}
    head = git(root, "rev-parse", "HEAD")  # the commit the trials cloned: their baseline
    assert all(ref.startswith(f"refs/exps/{head[:2]}/{head[2:]}/") for ref in refs)
    summary_file = DatasetLayout.of(NAME).model_dir("dense") / SUMMARY_FILE
    for row in rows:
        ref = by_name[row["experiment"]]
        params = parse_params(git(bare, "show", f"{ref}:params.yaml"), f"{ref}:params.yaml")
        assert params["dense"]["learning_rate"] == row["overrides"]["dense.learning_rate"]
        summary = json.loads(git(bare, "show", f"{ref}:{summary_file.as_posix()}"))
        assert summary["val_loss"] == pytest.approx(row["metrics"]["val_loss"])  # the metrics `dvc exp show` reads
        assert row["tags"]["dvc.exp.name"] == row["experiment"]  # the MLflow child run names it
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--name-only", str(bare)], cwd=root, capture_output=True, text=True
    )
    assert sorted(listed.stdout.split()) == sorted(row["experiment"] for row in rows)  # as DVC sees the remote
