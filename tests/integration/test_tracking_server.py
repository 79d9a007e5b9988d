"""Track stage: the tiny pipeline's outputs logged to a real `mlflow server` (and to a sqlite store): one parent
run with a child per head, params / metrics / artifacts, registered models, the champion alias."""
import copy
import os
import shutil
import subprocess

import keras
import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.config import parse_config
from pipeline.download import download
from pipeline.evaluate import HEADS
from pipeline.io import read_json, sha256_file
from pipeline.prepare import prepare
from pipeline.tracking import track
from pipeline.tracking_context import lock_tags
from tests.conftest import TINY_PARAMS, make_dataset, run_stages, write_params, zip_dir
from tests.test_tracking_context import LOCK

NAME = "tracked"  # own experiment / registered model: the server is shared by the whole session


@pytest.fixture(autouse=True)
def _forget_tracking_uri():
    """track() sets MLflow's process-wide tracking URI (and the env var): don't leak it into later tests."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _paths(project):
    d = project / "data" / NAME
    return d, dict(download_info=d / "download.json", prepare_summary=d / "prepare.json", features=d / "features",
                   manifest=d / "prepared" / "manifest.csv", reports=d / "reports", lock=project / "dvc.lock",
                   model_dirs={h: d / "models" / h for h in HEADS}, out=d / "reports" / "mlflow.json")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny pipeline's outputs laid out as dvc.yaml does, next to a dvc.lock, in a git repo."""
    root = tmp_path_factory.mktemp("project")
    archive = zip_dir(make_dataset(root / "src" / NAME), root / f"{NAME}.zip")
    params = {**copy.deepcopy(TINY_PARAMS), "data": {"name": NAME, "url": str(archive)}}
    cfg = parse_config(params)
    d, _ = _paths(root)
    download(cfg.data, d / "raw", d / "download.json")
    prepare(d / "raw", d / "prepared", d / "prepare.json", cfg.split, workers=1)
    run_stages(d, cfg)
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    write_params(root / "params.yaml", params)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for cmd in (["init", "-q"], ["add", "dvc.lock", "params.yaml"], ["commit", "-qm", "tiny"]):
        subprocess.run(git + cmd, cwd=root, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True)
    return root, params, commit.stdout.strip()


@pytest.fixture(scope="module")
def first(project, mlflow_server):
    """One track against the server, run by a (pretend) Prefect flow run."""
    root, params, _ = project
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.setenv("PREFECT__FLOW_RUN_ID", "flow-run-1")
        return track(parse_config(params), **_paths(root)[1])


def _artifacts(client, run_id, path=None):
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.servers
def test_parent_run_has_params_tags_and_artifacts(project, mlflow_server, first):
    root, params, commit = project
    paths = _paths(root)[1]
    assert read_json(paths["out"]) == first and first["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    assert client.get_experiment_by_name(NAME).experiment_id == first["experiment_id"]
    parent = client.get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED"
    expected = {k: str(v) for k, v in parse_config(params).flat().items()}
    expected["data.archive_sha256"] = sha256_file(root / f"{NAME}.zip")
    expected["data.manifest_sha256"] = sha256_file(paths["manifest"])
    assert parent.data.params == expected
    tags = parent.data.tags
    assert tags["mlflow.source.git.commit"] == commit and tags["prefect.flow_run_id"] == "flow-run-1"
    assert {k: tags[k] for k in tags if k.startswith("dvc.")} == lock_tags(paths["lock"])
    assert set(lock_tags(paths["lock"])) == {"dvc.stage.prepare.md5", "dvc.stage.train_dense.md5"}
    assert _artifacts(client, parent.info.run_id) == {"metrics.json", "report.html", "prepare.json",
                                                       "download.json", "dvc.lock", "plots"}
    assert _artifacts(client, parent.info.run_id, "plots") == {"plots/roc.png"}


@pytest.mark.servers
def test_a_child_run_per_head_with_history_test_metrics_and_plots(project, mlflow_server, first):
    d = _paths(project[0])[0]
    client = MlflowClient(mlflow_server)
    children = client.search_runs([first["experiment_id"]], f"tags.mlflow.parentRunId = '{first['parent_run_id']}'")
    assert {r.info.run_name: r.info.run_id for r in children} == first["child_run_ids"]
    test_metrics = read_json(d / "reports" / "metrics.json")
    parent_params = client.get_run(first["parent_run_id"]).data.params
    for run in children:
        head = run.info.run_name
        assert run.data.params == {**parent_params, "head": head}
        assert run.data.tags["prefect.flow_run_id"] == "flow-run-1"
        history = np.genfromtxt(d / "models" / head / "history.csv", delimiter=",", names=True)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            logged = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, round(m.value, 6)) for m in logged] == [
                (int(e), round(float(v), 6)) for e, v in zip(history["epoch"], history[key])]
        m = run.data.metrics
        for key in ("accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc"):
            assert m[f"test_{key}"] == pytest.approx(test_metrics[head][key])
        summary = read_json(d / "models" / head / "summary.json")
        assert m["best_epoch"] == summary["best_epoch"] and m["train_seconds"] == summary["train_seconds"]
        assert {"summary.json", "history.csv", "plots"} <= _artifacts(client, run.info.run_id)
        assert _artifacts(client, run.info.run_id, "plots") == {
            f"plots/confusion_{head}.png", f"plots/curves_{head}.png", "plots/roc.png",
            f"plots/misclassified_{head}.png", *([f"plots/gradcam_{head}.png"] if head == "finetune" else [])}
    served = client.search_model_versions(f"name = '{first['registered_model']}-served'")
    assert [v.run_id for v in served] == [first["child_run_ids"]["finetune"]]  # the raw-image pyfunc model


@pytest.mark.servers
def test_models_are_registered_and_the_champion_loads_and_predicts(project, mlflow_server, first, monkeypatch):
    d = _paths(project[0])[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # for the fluent calls below
    client = MlflowClient(mlflow_server)
    name = first["registered_model"]
    assert name == f"{NAME}-classifier"
    accuracy = {}
    for head, version in first["model_versions"].items():
        mv = client.get_model_version(name, version)
        assert mv.run_id == first["child_run_ids"][head] and mv.tags["head"] == head
        accuracy[head] = float(mv.tags["test_accuracy"])
        reqs = mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{version}")
        assert {"keras", "numpy", "h5py"} <= {line.split("==")[0] for line in open(reqs).read().split()}
    champion = first["champion"]
    assert champion["changed"] and champion["test_accuracy"] == max(accuracy.values())
    assert champion["version"] == first["model_versions"][champion["head"]]
    uri = f"models:/{name}@champion"
    local = mlflow.artifacts.download_artifacts(uri)
    example = mlflow.models.Model.load(local).load_input_example(local)
    size = project[1]["backbone"]["image_size"]
    inputs = {"dense": np.load(d / "features" / "test.npy").shape[1:],  # cached features
              "finetune": (size, size, 3)}  # RGB pixels
    assert example.shape == (1, *inputs[champion["head"]])
    probs = np.asarray(mlflow.pyfunc.load_model(uri).predict(example))
    trained = keras.models.load_model(d / "models" / champion["head"] / "model.keras")
    np.testing.assert_allclose(probs, trained.predict(example, verbose=0), rtol=1e-5)
    assert probs.shape == (1, 1) and 0 <= probs[0, 0] <= 1


@pytest.mark.servers
def test_a_head_only_change_gets_new_runs_and_the_champion_stays_the_best(project, mlflow_server, first, tmp_path,
                                                                         monkeypatch):
    root, params, _ = project
    copy_root = tmp_path / "project"
    shutil.copytree(root, copy_root, symlinks=True)
    params = copy.deepcopy(params)
    params["finetune"]["learning_rate"] = 3e-4
    d, paths = _paths(copy_root)
    run_stages(d, parse_config(params), first="train_finetune")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    second = track(parse_config(params), **paths)

    assert second["experiment_id"] == first["experiment_id"] and second["parent_run_id"] != first["parent_run_id"]
    assert not set(second["child_run_ids"].values()) & set(first["child_run_ids"].values())
    assert min(second["model_versions"].values()) > max(first["model_versions"].values())
    client = MlflowClient(mlflow_server)
    new = client.get_run(second["child_run_ids"]["finetune"]).data.params
    assert new["finetune.learning_rate"] == "0.0003" and new["dense.units"] == str(params["dense"]["units"])
    # Whatever the tiny models scored: the champion is the best version so far, the earliest on ties.
    versions = client.search_model_versions(f"name = '{first['registered_model']}'")
    best = max(float(v.tags["test_accuracy"]) for v in versions)
    earliest_best = min(int(v.version) for v in versions if float(v.tags["test_accuracy"]) == best)
    assert int(client.get_model_version_by_alias(first["registered_model"], "champion").version) == earliest_best
    assert second["champion"]["version"] == earliest_best
    assert second["champion"]["changed"] == (earliest_best != first["champion"]["version"])


def test_without_a_server_runs_go_to_a_sqlite_store(project, tmp_path, monkeypatch):
    root, params, _ = project
    paths = {**_paths(root)[1], "out": tmp_path / "mlflow.json"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    record = track(parse_config(params), **paths)
    client = MlflowClient(record["tracking_uri"])
    assert client.get_run(record["parent_run_id"]).info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())
    assert (tmp_path / "mlruns").is_dir() and record["champion"]["changed"]
