"""What users serve (#27), through the track stage's CLI as dvc.yaml runs it, against a real `mlflow server`:
`champion` names the shipped image model (the fine-tune stage's, whichever candidate it chose on validation), on
`<name>-classifier` and on its served image-file model (which README serves by alias); an execution in a DVC
experiment's copy of the project moves no alias however it scores; the same outputs tracked again register nothing
twice; run names say what tells executions apart.

The scores are set here (metrics.json, the shipped model's validation loss): better ones in the experiment."""

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.files import read_json, write_json
from pipeline.layout import METRIC_NAMES, SUMMARY_FILE, DatasetLayout
from pipeline.predict import from_model_dir
from tests.helpers.params import deep_merge, write_params
from tests.helpers.pipeline import stage_command
from tests.helpers.processes import env, stop
from tests.helpers.servers import start_mlflow_server
from tests.integration.test_readme_serve import readme_commands

pytestmark = [pytest.mark.servers, pytest.mark.usefixtures("forget_tracking_uri")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("registry_server"))
    yield url
    stop(proc, timeout=15)


def _scored(root: Path, name: str, score: float) -> DatasetLayout:
    """`root`'s dataset with both heads scoring `score` on every test metric, the shipped model 1 - `score` as its
    validation loss."""
    layout = DatasetLayout.of(name, root)
    metrics = read_json(layout.metrics)
    write_json(layout.metrics, {head: {**m, **dict.fromkeys(METRIC_NAMES, score)} for head, m in metrics.items()})
    shipped = layout.model_dir("finetune") / SUMMARY_FILE
    write_json(shipped, {**read_json(shipped), "val_loss": 1 - score})
    return layout


def _track(root: Path, layout: DatasetLayout, url: str, **extra: str) -> dict:
    """The track stage's command in `root` (DVC_ROOT: the project; `extra` may say otherwise); its record."""
    module, args = stage_command("track", layout)
    cmd = [sys.executable, "-m", module, "--params", str(root / "params.yaml"), *args]
    environ = env(**{"MLFLOW_TRACKING_URI": url, "DVC_ROOT": str(root), **extra})
    done = subprocess.run(cmd, cwd=root, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_json(layout.mlflow_record)


@pytest.fixture(scope="module")
def workspace(tiny_project, server, tmp_path_factory) -> tuple[Path, DatasetLayout, dict]:
    """A copy of tiny_project whose heads tie (the case where the dense head took the alias), tracked in its
    workspace: (root, dataset, record)."""
    root = shutil.copytree(tiny_project.root, tmp_path_factory.mktemp("aliases") / "project", symlinks=True)
    layout = _scored(root, tiny_project.cfg.data.name, 0.75)
    return root, layout, _track(root, layout, server)


@pytest.fixture(scope="module")
def experiment(tiny_project, server, workspace) -> dict:
    """A flow's override run / `dvc exp run --temp` of the workspace's project, scoring better: the stage in a copy
    of the project under its .dvc/tmp, DVC_ROOT the project (as DVC and flows/experiments.py set it); its record."""
    root = workspace[0]
    clone = shutil.copytree(tiny_project.root, root / ".dvc" / "tmp" / "exp-dropout", symlinks=True)
    write_params(clone / "params.yaml", deep_merge(tiny_project.params, {"dense": {"dropout": 0.3}}))
    layout = _scored(clone, tiny_project.cfg.data.name, 1.0)
    return _track(clone, layout, server, DVC_ROOT=str(root), DVC_EXP_NAME="exp-dropout")


def _aliased(client: MlflowClient, name: str) -> int:
    return int(client.get_model_version_by_alias(name, "champion").version)


def test_champion_is_the_shipped_image_model(tiny_project, server, workspace):
    _, layout, record = workspace
    client, name = MlflowClient(server), record["registered_model"]
    champion = record["champion"]
    shipped = read_json(layout.model_dir("finetune") / SUMMARY_FILE)["shipped"]
    assert champion["head"] == "finetune" and champion["shipped"] == shipped and champion["changed"]
    mlflow.set_tracking_uri(server)
    # Any MLflow client: the Keras model takes RGB pixels, the served model image files.
    keras_model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    size = tiny_project.cfg.backbone.image_size
    assert keras_model.metadata.get_input_schema().inputs[0].shape == (-1, size, size, 3)
    pixels = np.asarray(keras_model.predict(np.full((1, size, size, 3), 128, np.float32)))
    assert pixels.shape == (1, 1) and 0 <= pixels[0, 0] <= 1
    image = sorted(tiny_project.layout.raw.rglob("*.jpg"))[0]
    (want,) = from_model_dir(layout.model_dir("finetune"), tiny_project.cfg).predict_files([("x", image)])
    served = mlflow.pyfunc.load_model(f"models:/{name}-served@champion")
    (answer,) = served.predict(pd.DataFrame({"image": [image.read_bytes()]})).to_dict("records")
    assert answer["class"] == want.label and answer["probability"] == pytest.approx(want.probability, abs=1e-5)
    assert _aliased(client, name) == champion["version"] == record["model_versions"]["finetune"]
    assert _aliased(client, f"{name}-served") == champion["served_version"] == record["served_versions"]["finetune"]


def test_an_experiment_moves_no_alias_however_it_scores(server, workspace, experiment):
    record = workspace[2]
    client, name = MlflowClient(server), record["registered_model"]
    served = f"{name}-served"
    assert _aliased(client, name) == record["champion"]["version"]
    assert _aliased(client, served) == record["served_versions"]["finetune"]
    latest = max(int(v.version) for v in client.search_model_versions(f"name = '{served}'"))
    assert latest == experiment["served_versions"]["finetune"]  # what `…-served/latest` would have served
    (command,) = readme_commands("mlflow models serve")
    assert "-classifier-served@champion " in command  # README serves the alias
    assert experiment["model_versions"] != record["model_versions"] and not experiment["workspace"]
    assert experiment["champion"] == {**record["champion"], "changed": False}


def test_run_names_say_what_tells_executions_apart(tiny_project, server, workspace, experiment):
    """The DVC experiment, else the commit; not the dataset, which is the MLflow experiment's name already."""
    record = workspace[2]
    runs = {r.info.run_id: r.info.run_name for r in MlflowClient(server).search_runs([record["experiment_id"]])}
    commit = tiny_project.commit[:7]
    assert runs[record["parent_run_id"]] == commit and runs[experiment["parent_run_id"]] == "exp-dropout"
    assert runs[record["child_run_ids"]["dense"]] == f"dense {commit}"
    assert runs[experiment["child_run_ids"]["finetune"]] == "finetune exp-dropout"


def test_the_same_outputs_tracked_again_register_nothing_twice(server, workspace):
    root, layout, record = workspace
    client, name = MlflowClient(server), record["registered_model"]
    before = (_versions(client, name), _runs(client, record["experiment_id"]))
    again = _track(root, layout, server)  # e.g. a stage that reran and wrote the same bytes: the same execution
    assert again == record | {"champion": {**record["champion"], "changed": False}}
    assert (_versions(client, name), _runs(client, record["experiment_id"])) == before


def _versions(client: MlflowClient, name: str) -> set[tuple[str, str]]:
    return {(v.name, v.version) for n in (name, f"{name}-served") for v in client.search_model_versions(f"name='{n}'")}


def _runs(client: MlflowClient, experiment_id: str) -> set[str]:
    return {r.info.run_id for r in client.search_runs([experiment_id])}
