"""predict CLI and the served model on the tiny two-class pipeline: files, folders, URLs, bad files, the default
model, the dense head, MLflow model URIs, and the pyfunc model behind a real `mlflow models serve`."""
import base64
import csv
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import keras
import mlflow
import pytest
from PIL import Image

from pipeline.config import parse_config
from pipeline.manifest import read_manifest, split_rows
from pipeline.predict import PredictError, from_model_dir, from_model_uri, main, predict
from pipeline.prepare import prepare
from pipeline.serving import log_pyfunc_model
from tests.conftest import TINY_PARAMS, _wait_healthy, free_port, make_dataset, run_stages, write_params

NAME = "predicted"
SERVED = f"{NAME}-served"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny pipeline's outputs laid out as dvc.yaml does, with its params.yaml."""
    root = tmp_path_factory.mktemp("project")
    params = {**TINY_PARAMS, "data": {"name": NAME, "url": "unused"}}
    write_params(root / "params.yaml", params)
    cfg = parse_config(params)
    d = root / "data" / NAME
    make_dataset(d / "raw", per_class=15, layout="flat")
    prepare(d / "raw", d / "prepared", d / "prepare.json", cfg.split, workers=1)
    run_stages(d, cfg)
    return root, cfg


@pytest.fixture(scope="module")
def served(project, tmp_path_factory):
    """The fine-tuned model logged as the pyfunc model to a sqlite store, registered with the champion alias, and
    `mlflow models serve` started on it; it boots while the other tests run. Yields (store URI, server URL)."""
    root, cfg = project
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(NAME, artifact_location=(store / "mlruns").as_uri())
    mlflow.set_experiment(NAME)
    example = next((root / "data" / NAME / "raw").rglob("*.jpg"))
    with mlflow.start_run():
        info = log_pyfunc_model(root / "data" / NAME / "models" / "finetune", cfg.evaluate.tta_flip, example,
                                registered_model_name=SERVED)
    mlflow.MlflowClient().set_registered_model_alias(SERVED, "champion", info.registered_model_version)
    port, log = free_port(), store / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,  # uvicorn is started by name: the venv's bin must be on PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{SERVED}@champion",
                                 "--host", "127.0.0.1", "--port", str(port), "--env-manager", "local"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield uri, f"http://127.0.0.1:{port}", proc, log
    finally:
        mlflow.set_tracking_uri(None)
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: the CLI and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _bad_files(folder: Path) -> dict[str, str]:
    """Files that must each get an error line: name -> expected text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return {"truncated.jpg": "error: ", "empty.png": "error: empty file", "notes.txt": "unsupported file type (.txt)"}


def test_cli_predicts_files_and_folders_and_reports_each_bad_file(project, tmp_path, monkeypatch, capsys):
    root, _ = project
    monkeypatch.chdir(root)  # default model: data/<data.name>/models/finetune of ./params.yaml
    folder = tmp_path / "in"
    bad = _bad_files(folder)
    Image.new("RGBA", (40, 30), (200, 30, 30, 120)).save(folder / "alpha.png")  # converted as prepare does
    single = next((root / "data" / NAME / "raw" / "dogs").glob("*.jpg"))
    with pytest.raises(SystemExit) as exit_:
        main([str(single), str(folder), str(tmp_path / "missing.jpg"), "--csv", str(tmp_path / "out.csv")])
    assert exit_.value.code == 1
    out = capsys.readouterr()
    lines = dict(line.split("\t", 1) for line in out.out.splitlines())
    assert len(lines) == 6
    for name, expect in bad.items():
        assert expect in lines[str(folder / name)]
    assert "cannot read" in lines[str(tmp_path / "missing.jpg")]
    for good in (str(single), str(folder / "alpha.png")):
        label, prob = lines[good].split("\t")
        assert label in ("cats", "dogs") and 0.5 <= float(prob) <= 1
    assert "4 of 6 input(s) could not be predicted" in out.err
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["source", "class", "probability", "error", "prob_cats", "prob_dogs"]
    ok = [r for r in rows if not r["error"]]
    assert len(rows) == 6 and len(ok) == 2
    assert all(abs(float(r["prob_cats"]) + float(r["prob_dogs"]) - 1) < 1e-5 for r in ok)


def test_predictions_agree_with_evaluate_on_the_raw_test_files(project):
    """predict decodes the original files itself; evaluate read prepare's manifest: same answers."""
    root, cfg = project
    d = root / "data" / NAME
    rows = split_rows(read_manifest(d / "prepared" / "manifest.csv"), "test")
    got = predict([str(d / "raw" / r.source) for r in rows], from_model_dir(d / "models" / "finetune", cfg))
    with open(d / "reports" / "plots" / "predictions_finetune.csv", newline="") as f:
        expected = [r["predicted"] for r in csv.DictReader(f)]
    assert [p.label for p in got] == expected
    dense = predict([str(d / "raw" / r.source) for r in rows], from_model_dir(d / "models" / "dense", cfg))
    assert all(p.label in ("cats", "dogs") and abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in dense)


def test_urls_are_downloaded_and_failures_reported(project, tmp_path):
    root, cfg = project
    image = next((root / "data" / NAME / "raw" / "cats").glob("*.jpg"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = predict([f"{base}/{image.name}", f"{base}/nope.jpg"],
                      from_model_dir(root / "data" / NAME / "models" / "finetune", cfg))
    finally:
        server.shutdown()
    assert got[0].error is None and got[0].label in ("cats", "dogs")
    assert "HTTP Error 404" in got[1].error


def test_missing_model_is_a_clear_error(project, tmp_path):
    _, cfg = project
    with pytest.raises(PredictError, match="no model.keras"):
        from_model_dir(tmp_path / "nothing", cfg)


def test_model_uris_of_the_served_model_and_of_keras_models(project, served, monkeypatch):
    """The pyfunc model by registry alias, and both heads logged as Keras models the way the track stage does
    (class names in the run's summary.json, backbone params in the run's params): the champion may be either."""
    root, cfg = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served[0])
    d = root / "data" / NAME
    images = [str(p) for p in sorted((d / "raw").rglob("*.jpg"))[:4]]
    runs = {}
    for head in ("dense", "finetune"):
        with mlflow.start_run() as run:
            mlflow.log_params(cfg.flat())
            mlflow.log_artifact(str(d / "models" / head / "summary.json"))
            mlflow.keras.log_model(keras.models.load_model(d / "models" / head / "model.keras"), name=head,
                                   pip_requirements=[])
        runs[head] = run.info.run_id
    for head in ("dense", "finetune"):
        local = predict(images, from_model_dir(d / "models" / head, cfg))
        logged = predict(images, from_model_uri(f"runs:/{runs[head]}/{head}"))
        for a, b in zip(local, logged):
            assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-5)
    by_alias = predict(images, from_model_uri(f"models:/{SERVED}@champion"))
    assert [p.label for p in by_alias] == [p.label for p in local]  # `local`: the fine-tuned model, served
    assert [p.probability for p in by_alias] == pytest.approx([p.probability for p in local], abs=1e-5)
    with pytest.raises(PredictError, match="nope"):
        from_model_uri("models:/nope@champion")


def test_served_model_answers_over_http(project, served):
    """POST base64 image files to /invocations: one answer per row, a corrupt row gets its error."""
    root, cfg = project
    _, url, proc, log = served
    _wait_healthy(f"{url}/ping", proc, log, timeout=150)
    d = root / "data" / NAME
    images = sorted((d / "raw").rglob("*.jpg"))[:3]
    rows = [[base64.b64encode(p.read_bytes()).decode()] for p in images] + [[base64.b64encode(b"junk").decode()]]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answers = json.loads(response.read())["predictions"]
    expected = predict([str(p) for p in images], from_model_dir(d / "models" / "finetune", cfg))
    assert len(answers) == 4
    for got, want in zip(answers, expected):
        assert got["class"] == want.label and got["error"] is None
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
    assert answers[3]["class"] is None and "not an image" in answers[3]["error"]
