"""The production tracking store: the track stage's CLI, run twice on the same outputs (the second reuses what the
first logged), against a real `mlflow server` whose backend store is a real PostgreSQL server and whose artifacts go
to a shared folder (docs/tracking.md's commands)."""

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.files import read_json
from pipeline.layout import DatasetLayout
from tests.helpers.pipeline import stage_command
from tests.helpers.postgres import create_database, postgres_server, query
from tests.helpers.processes import env, stop
from tests.helpers.servers import start_mlflow_server

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("forget_tracking_uri")]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A PostgreSQL server on loopback with an empty `mlflow` database; yields that database's URI."""
    with postgres_server(tmp_path_factory.mktemp("postgres") / "postgres.log") as pg:
        yield create_database(pg, "mlflow")


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    """`mlflow server --backend-store-uri postgresql://… --artifacts-destination <shared folder>`; (URL, folder)."""
    root = tmp_path_factory.mktemp("mlflow_postgres")
    shared = root / "shared" / "mlartifacts"  # what every machine would mount
    proc, url = start_mlflow_server(root, database, shared)
    try:
        yield url, shared
    finally:
        stop(proc, timeout=15)


@pytest.fixture(scope="module")
def records(tiny_project, server, tmp_path_factory) -> list[dict]:
    """The track stage as dvc.yaml runs it (a subprocess, MLFLOW_TRACKING_URI set), twice on one copy of
    tiny_project's outputs; the mlflow.json record of each."""
    root = shutil.copytree(tiny_project.root, tmp_path_factory.mktemp("pg_project") / "project", symlinks=True)
    layout = DatasetLayout.of(tiny_project.cfg.data.name, root)
    module, args = stage_command("track", layout)
    cmd = [sys.executable, "-m", module, "--params", str(root / "params.yaml"), *args]
    out = []
    for _ in range(2):
        done = subprocess.run(cmd, cwd=root, env=env(MLFLOW_TRACKING_URI=server[0]), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out.append(read_json(layout.mlflow_record))
    return out


def test_runs_versions_and_champion_are_rows_in_postgresql(tiny_project, server, database, records):
    first, second = records
    client = MlflowClient(server[0])
    name = f"{tiny_project.cfg.data.name}-classifier"
    for record in records:
        assert record["tracking_uri"] == server[0] and record["registered_model"] == name
        assert client.get_run(record["parent_run_id"]).info.status == "FINISHED"
        children = client.search_runs(
            [record["experiment_id"]], f"tags.mlflow.parentRunId = '{record['parent_run_id']}'"
        )
        assert {r.data.params["head"]: r.info.run_id for r in children} == record["child_run_ids"]
    # The same execution again: the runs and versions logged before are reused, the champion keeps the alias.
    assert second == {**first, "champion": {**first["champion"], "changed": False}}
    assert int(client.get_model_version_by_alias(name, "champion").version) == first["champion"]["version"]

    run_ids = {i for r in records for i in [r["parent_run_id"], *r["child_run_ids"].values()]}
    rows = query(database, "SELECT run_uuid, status FROM runs")
    assert dict(rows) == dict.fromkeys(run_ids, "FINISHED")
    logged = {(name, v) for r in records for v in r["model_versions"].values()}
    served = {(f"{name}-served", v) for v in (1, 2)}  # each head's image-file model
    assert set(query(database, "SELECT name, version FROM model_versions")) == logged | served
    assert sorted(query(database, "SELECT name, alias, version FROM registered_model_aliases")) == [
        (name, "champion", first["champion"]["version"]),
        (f"{name}-served", "champion", first["champion"]["served_version"]),
    ]


def test_artifacts_are_in_the_shared_folder_and_the_champion_downloads(tiny_project, server, records, tmp_path):
    url, shared = server
    for record in records:
        experiment = shared / record["experiment_id"]
        for run_id in record["child_run_ids"].values():
            assert (experiment / run_id / "artifacts" / "summary.json").is_file()
        parent = experiment / record["parent_run_id"] / "artifacts"
        assert (parent / "metrics.json").read_bytes() == tiny_project.layout.metrics.read_bytes()
    name = records[0]["registered_model"]
    models = list((shared / records[0]["experiment_id"] / "models").glob("*/artifacts/MLmodel"))
    assert len(models) == 4  # one execution (the second reused it): two heads, each also as the served model
    mlflow.set_tracking_uri(url)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=str(tmp_path)))
    stored = {p.read_bytes() for p in shared.rglob("model.keras")}  # there is no other artifact store
    assert (local / "data" / "model.keras").read_bytes() in stored
