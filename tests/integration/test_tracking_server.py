"""Track stage against a real `mlflow server`: the tiny pipeline's outputs logged as one parent run with a child
per head, params / metrics / artifacts, registered models, the champion alias."""

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.config import parse_config
from pipeline.files import read_json, sha256_file
from pipeline.layout import SUMMARY_FILE, DatasetLayout
from pipeline.stages.track import track
from pipeline.tracking.lineage import lock_tags
from pipeline.tracking.served import image_model
from tests.helpers.params import deep_merge, write_params
from tests.helpers.pipeline import run_stages

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("forget_tracking_uri")]


@pytest.fixture(scope="module")
def first(tiny_project, mlflow_server):
    """One track against the server, run by a (pretend) Prefect flow run inside a (pretend) `dvc exp run`: its
    record as mlflow.json holds it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.setenv("PREFECT__FLOW_RUN_ID", "flow-run-1")
        mp.setenv("DVC_EXP_NAME", "dusty-mast")
        mp.setenv("DVC_EXP_BASELINE_REV", tiny_project.commit)
        mp.delenv("DVC_ROOT", raising=False)
        record = track(tiny_project.cfg, tiny_project.layout, tiny_project.lock, tiny_project.layout.mlflow_record)
        return record.model_dump(mode="json")


def _artifacts(client, run_id, path=None):
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_parent_run_has_params_tags_and_artifacts(tiny_project, mlflow_server, first):
    d = tiny_project.layout
    assert read_json(d.mlflow_record) == first and first["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    assert client.get_experiment_by_name(tiny_project.cfg.data.name).experiment_id == first["experiment_id"]
    parent = client.get_run(first["parent_run_id"])
    assert parent.info.status == "FINISHED"
    expected = {k: str(v) for k, v in tiny_project.cfg.flat().items() if v is not None}  # unset: not 'None'
    assert len(expected) < len(tiny_project.cfg.flat())  # data.sha256 and data.size are unset here
    expected["data.archive_sha256"] = sha256_file(tiny_project.archive)
    expected["data.manifest_sha256"] = sha256_file(d.manifest)
    assert parent.data.params == expected
    tags = parent.data.tags
    assert tags["mlflow.source.git.commit"] == tiny_project.commit and tags["prefect.flow_run_id"] == "flow-run-1"
    assert tags["dvc.exp.name"] == "dusty-mast" and tags["dvc.exp.baseline_rev"] == tiny_project.commit
    assert tags["mlflow.source.name"] == str(tiny_project.root.resolve())  # no git remote: the project folder
    assert parent.info.run_name == "dusty-mast"  # the experiment is the dataset's already
    mine = lock_tags(tiny_project.lock, tiny_project.cfg.data.name)  # its dataset's stages, not the other's
    assert {k: tags[k] for k in tags if k.startswith("dvc.stage.")} == mine
    assert set(mine) == {"dvc.stage.prepare.md5", "dvc.stage.train_dense.md5"}
    assert _artifacts(client, parent.info.run_id) == {
        "metrics.json",
        "report.html",
        "prepare.json",
        "download.json",
        "dvc.lock",
        "plots",
    }
    assert _artifacts(client, parent.info.run_id, "plots") == {"plots/roc.png"}


def test_the_parent_runs_report_names_when_what_and_where_the_dvc_output_unchanged(tiny_project, mlflow_server, first):
    """report.html in MLflow says what the DVC output cannot (it must stay byte-identical): the execution's end,
    the commit, the DVC experiment, links to the runs, the champion."""
    before = tiny_project.layout.report.read_bytes()
    local = mlflow.artifacts.download_artifacts(
        run_id=first["parent_run_id"], artifact_path="report.html", tracking_uri=mlflow_server
    )
    html = Path(local).read_text()
    runs = [first["parent_run_id"], *first["child_run_ids"].values()]
    for run_id in runs:
        assert f'href="{mlflow_server}/#/experiments/{first["experiment_id"]}/runs/{run_id}"' in html
    assert tiny_project.commit in html and "dusty-mast" in html and " UTC</td>" in html
    assert f"version {first['champion']['version']} (ships {first['champion']['shipped']}, validation" in html
    assert "commit and time: the MLflow run" not in html  # the note the copy fills in
    assert tiny_project.layout.report.read_bytes() == before and b"dusty-mast" not in before


def test_the_parent_spans_the_execution_and_holds_the_heads_scores(tiny_project, mlflow_server, first):
    """Its times are the stages' (from the first execution record's start to the last one's end), not the track
    stage's; its metrics compare the heads and name the champion."""
    records = [read_json(p) for p in sorted(tiny_project.layout.execution("x").parent.glob("*.json"))]
    assert len(records) == 5  # download, extract, train_dense, train_finetune, evaluate
    parent = MlflowClient(mlflow_server).get_run(first["parent_run_id"])
    assert parent.info.start_time == min(r["started_ms"] for r in records)
    assert parent.info.end_time == max(r["ended_ms"] for r in records)
    test_metrics, champion = read_json(tiny_project.layout.metrics), first["champion"]
    assert parent.data.metrics == {
        "dense_test_accuracy": pytest.approx(test_metrics["dense"]["accuracy"]),
        "finetune_test_accuracy": pytest.approx(test_metrics["finetune"]["accuracy"]),
        "champion_test_accuracy": pytest.approx(champion["test_accuracy"]),
        "champion_version": champion["version"],
    }
    assert parent.data.tags["champion.head"] == champion["head"]


def test_a_child_run_per_head_with_history_test_metrics_and_plots(tiny_project, mlflow_server, first):
    d = tiny_project.layout
    client = MlflowClient(mlflow_server)
    children = client.search_runs([first["experiment_id"]], f"tags.mlflow.parentRunId = '{first['parent_run_id']}'")
    assert {r.data.params["head"]: r.info.run_id for r in children} == first["child_run_ids"]
    test_metrics = read_json(d.metrics)
    parent_params = client.get_run(first["parent_run_id"]).data.params
    for run in children:
        head = run.data.params["head"]
        assert run.info.run_name == f"{head} dusty-mast" and run.data.tags["dvc.exp.name"] == "dusty-mast"
        assert run.data.params == {**parent_params, "head": head}
        assert run.data.tags["prefect.flow_run_id"] == "flow-run-1"
        history = np.genfromtxt(d.model_dir(head) / "history.csv", delimiter=",", names=True)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            logged = client.get_metric_history(run.info.run_id, key)
            assert [(m.step, round(m.value, 6)) for m in logged] == [
                (int(e), round(float(v), 6)) for e, v in zip(history["epoch"], history[key])
            ]
        m = run.data.metrics
        for key in ("accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc"):
            assert m[f"test_{key}"] == pytest.approx(test_metrics[head][key])
        summary = read_json(d.model_dir(head) / "summary.json")
        execution = read_json(d.execution(f"train_{head}"))  # timings: the stage's execution record
        assert m["best_epoch"] == summary["best_epoch"] and m["train_seconds"] == execution["seconds"]
        # The kept model's validation scores (its best epoch's), which the history's last point need not be.
        assert (m["best_val_loss"], m["best_val_accuracy"]) == (summary["val_loss"], summary["val_accuracy"])
        assert (run.info.start_time, run.info.end_time) == (execution["started_ms"], execution["ended_ms"])
        assert m["seconds_per_epoch"] == round(execution["seconds"] / execution["epochs_run"], 1)
        assert {"summary.json", "history.csv", "plots"} <= _artifacts(client, run.info.run_id)
        assert _artifacts(client, run.info.run_id, "plots") == {
            f"plots/confusion_{head}.png",
            f"plots/curves_{head}.png",
            "plots/roc.png",
            f"plots/misclassified_{head}.png",
            *([f"plots/gradcam_{head}.png"] if head == "finetune" else []),
        }
    served = client.search_model_versions(f"name = '{first['registered_model']}-served'")
    assert {v.run_id: int(v.version) for v in served} == {  # each head's image-file pyfunc model
        first["child_run_ids"][head]: version for head, version in first["served_versions"].items()
    }


def test_models_are_registered_and_the_champion_loads_and_predicts(tiny_project, mlflow_server, first, monkeypatch):
    d = tiny_project.layout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # for the fluent calls below
    client = MlflowClient(mlflow_server)
    name = first["registered_model"]
    assert name == f"{tiny_project.cfg.data.name}-classifier"
    accuracy = {}
    for head, version in first["model_versions"].items():
        mv = client.get_model_version(name, version)
        assert mv.run_id == first["child_run_ids"][head] and mv.tags["head"] == head
        accuracy[head] = float(mv.tags["test_accuracy"])
        reqs = mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{version}")
        assert {"keras", "numpy", "h5py"} <= {line.split("==")[0] for line in Path(reqs).read_text().split()}
    champion, shipped = first["champion"], read_json(d.model_dir("finetune") / SUMMARY_FILE)
    assert champion["changed"] and champion["head"] == "finetune" and champion["shipped"] == shipped["shipped"]
    assert champion["version"] == first["model_versions"]["finetune"]  # chosen on validation, whatever the test says
    assert champion["test_accuracy"] == accuracy["finetune"] and champion["val_loss"] == shipped["val_loss"]
    uri = f"models:/{name}@champion"
    local = mlflow.artifacts.download_artifacts(uri)
    example = mlflow.models.Model.load(local).load_input_example(local)
    size = tiny_project.cfg.backbone.image_size
    assert example.shape == (1, size, size, 3)  # RGB pixels, whichever head (the dense one on the frozen base)
    probs = np.asarray(mlflow.pyfunc.load_model(uri).predict(example))
    trained = image_model(d.model_dir(champion["head"]), tiny_project.cfg.backbone)
    np.testing.assert_allclose(probs, trained.predict(example, verbose=0), rtol=1e-5)
    assert probs.shape == (1, 1) and 0 <= probs[0, 0] <= 1


def test_a_head_only_change_gets_new_runs_and_the_champion_stays_the_best(
    tiny_project, mlflow_server, first, tmp_path, monkeypatch
):
    root = shutil.copytree(tiny_project.root, tmp_path / "project", symlinks=True)
    params = deep_merge(tiny_project.params, {"finetune": {"learning_rate": 3e-4}})
    write_params(root / "params.yaml", params)
    layout = DatasetLayout.of(tiny_project.cfg.data.name, root)
    run_stages(layout, root / "params.yaml", first="train_finetune")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    second = track(parse_config(params), layout, root / "dvc.lock", layout.mlflow_record).model_dump(mode="json")

    assert second["experiment_id"] == first["experiment_id"] and second["parent_run_id"] != first["parent_run_id"]
    assert not set(second["child_run_ids"].values()) & set(first["child_run_ids"].values())
    assert min(second["model_versions"].values()) > max(first["model_versions"].values())
    client = MlflowClient(mlflow_server)
    new = client.get_run(second["child_run_ids"]["finetune"]).data.params
    assert new["finetune.learning_rate"] == "0.0003" and new["dense.units"] == str(params["dense"]["units"])
    # Whatever the tiny models scored: the champion is the shipped version of lowest validation loss so far (the
    # same split), the earliest on ties; the test accuracy plays no part.
    versions = [v for v in client.search_model_versions(f"name = '{first['registered_model']}'") if "shipped" in v.tags]
    best = min(float(v.tags["val_loss"]) for v in versions)
    earliest_best = min(int(v.version) for v in versions if float(v.tags["val_loss"]) == best)
    assert int(client.get_model_version_by_alias(first["registered_model"], "champion").version) == earliest_best
    assert second["champion"]["version"] == earliest_best
    assert second["champion"]["changed"] == (earliest_best != first["champion"]["version"])
