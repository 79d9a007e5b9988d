"""predict CLI on the tiny two-class pipeline: files, folders, URLs, bad files, the default model, the dense
head, and MLflow model URIs (the served image model by alias, Keras models logged as the track stage does)."""

import csv

import keras
import mlflow
import pytest
from PIL import Image

from pipeline.data.dataset import find_root
from pipeline.data.manifest import read_manifest, split_rows
from pipeline.model.predictor import PredictError
from pipeline.predict import from_model_dir, from_model_uri, main, predict
from pipeline.tracking.runs import log_run_config
from tests.helpers.servers import serve
from tests.helpers.tracking import SERVED


def _bad_files(folder):
    """Files that must each get an error line: name -> expected text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return {"truncated.jpg": "error: ", "empty.png": "error: empty file", "notes.txt": "unsupported file type (.txt)"}


def test_cli_predicts_files_and_folders_and_reports_each_bad_file(tiny_project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project.root)  # default model: data/<data.name>/models/finetune of ./params.yaml
    folder = tmp_path / "in"
    bad = _bad_files(folder)
    Image.new("RGBA", (40, 30), (200, 30, 30, 120)).save(folder / "alpha.png")  # converted as prepare does
    single = next(tiny_project.layout.raw.rglob("dogs/*.jpg"))
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


def test_predictions_agree_with_evaluate_on_the_raw_test_files(tiny_project):
    """predict decodes the original files itself; evaluate read prepare's manifest: same answers."""
    d, cfg = tiny_project.layout, tiny_project.cfg
    root = find_root(d.raw)  # manifest sources are relative to the dataset's root (inside the archive's folder)
    files = [str(root / r.source) for r in split_rows(read_manifest(d.manifest), "test")]
    got = predict(files, from_model_dir(d.model_dir("finetune"), cfg))
    with open(d.plots / "predictions_finetune.csv", newline="") as f:
        expected = [r["predicted"] for r in csv.DictReader(f)]
    assert [p.label for p in got] == expected
    dense = predict(files, from_model_dir(d.model_dir("dense"), cfg))
    assert all(p.label in ("cats", "dogs") and abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in dense)


def test_urls_are_downloaded_and_failures_reported(tiny_project):
    image = next(tiny_project.layout.raw.rglob("cats/*.jpg"))
    server = serve(image.parent)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = predict(
            [f"{base}/{image.name}", f"{base}/nope.jpg"],
            from_model_dir(tiny_project.layout.model_dir("finetune"), tiny_project.cfg),
        )
    finally:
        server.shutdown()
    assert got[0].error is None and got[0].label in ("cats", "dogs")
    assert "HTTP Error 404" in got[1].error


def test_missing_model_is_a_clear_error(tiny_project, tmp_path):
    with pytest.raises(PredictError, match="no model.keras"):
        from_model_dir(tmp_path / "nothing", tiny_project.cfg)


@pytest.mark.usefixtures("forget_tracking_uri")
def test_model_uris_of_the_served_model_and_of_keras_models(tiny_project, served_store, monkeypatch):
    """The pyfunc model by registry alias, and both heads logged as Keras models the way the track stage does
    (class names in the run's summary.json, backbone and tta_flip in its config.json): the champion may be either.
    A run without config.json is refused, naming it."""
    d, cfg = tiny_project.layout, tiny_project.cfg
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_store)
    images = [str(p) for p in sorted(d.raw.rglob("*.jpg"))[:4]]
    runs = {}
    for head, model in (("dense", "dense"), ("finetune", "finetune"), ("unconfigured", "finetune")):
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(d.model_dir(model) / "summary.json"))
            if head != "unconfigured":
                log_run_config(cfg)
            mlflow.keras.log_model(keras.models.load_model(d.model_file(model)), name=head, pip_requirements=[])
        runs[head] = run.info.run_id
    for head in ("dense", "finetune"):
        local = predict(images, from_model_dir(d.model_dir(head), cfg))
        logged = predict(images, from_model_uri(f"runs:/{runs[head]}/{head}"))
        for a, b in zip(local, logged):
            assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-5)
    by_alias = predict(images, from_model_uri(f"models:/{SERVED}@champion"))
    assert [p.label for p in by_alias] == [p.label for p in local]  # `local`: the fine-tuned model, served
    assert [p.probability for p in by_alias] == pytest.approx([p.probability for p in local], abs=1e-5)
    with pytest.raises(PredictError, match="nope"):
        from_model_uri("models:/nope@champion")
    with pytest.raises(PredictError, match=f"run {runs['unconfigured']} holds no config.json"):
        from_model_uri(f"runs:/{runs['unconfigured']}/unconfigured")
