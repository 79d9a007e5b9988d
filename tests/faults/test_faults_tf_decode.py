"""A file Pillow loads but TensorFlow's decoder rejects (issue #12): prepare quarantines it, extract names it if
one still gets there, and predict and the served model answer per file / per row, in every request format."""

import base64
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from PIL import Image

from pipeline.layout import MODEL_FILE, SUMMARY_FILE
from pipeline.model.features import feature_function, stream_features
from pipeline.model.inputs import decode
from pipeline.model.predictor import Predictor
from pipeline.predict import main, predict
from pipeline.tracking.served import SIGNATURE, log_pyfunc_model
from tests.helpers.faults import bad_crc_png
from tests.helpers.images import make_image
from tests.helpers.params import tiny_params, write_params
from tests.helpers.tracking import summary_of

CLASSES = ["cats", "dogs"]


@pytest.fixture
def files(tmp_path):
    """Two good JPEGs and the bad-CRC PNG."""
    good = [tmp_path / "in" / f"good{i}.jpg" for i in range(2)]
    for i, p in enumerate(good):
        make_image(p, i, i)
    bad = tmp_path / "in" / "bad_crc.png"
    bad_crc_png(bad)
    return good, bad


def _classifier(size: int = 16) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_pillow_loads_the_file_that_tensorflow_rejects(files):
    _, bad = files
    with Image.open(bad) as im:
        im.load()
        assert im.format == "PNG" and im.mode == "RGB"
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid PNG data"):
        decode(bad.read_bytes())


def test_extract_names_the_file_it_cannot_decode(files):
    good, bad = files
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    strategy = tf.distribute.get_strategy()
    out = bad.parent / "f.npy"
    with pytest.raises(RuntimeError, match=f"cannot decode {bad}: Invalid PNG data"):
        stream_features(
            feature_function(base, strategy, False), strategy, [*map(str, good), str(bad)], [out], (3,), 8, 2, "x"
        )


def test_predict_answers_each_file_and_exits_1(files, tmp_path, capsys):
    good, bad = files
    got = predict([str(good[0]), str(bad), str(good[1])], Predictor(_classifier(), CLASSES, 16, True))
    assert [p.label is not None for p in got] == [True, False, True]
    assert got[1].error.startswith("TensorFlow cannot decode: Invalid PNG data")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _classifier().save(model_dir / MODEL_FILE)
    summary_of(CLASSES).save(model_dir / SUMMARY_FILE)
    params = write_params(tmp_path / "params.yaml", tiny_params())
    with pytest.raises(SystemExit) as stop:
        main(["--params", str(params), "--model-dir", str(model_dir), str(good[0]), str(bad), str(good[1])])
    assert stop.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and f"{bad}\terror: TensorFlow cannot decode" in lines[1]
    assert all(line.split("\t")[1] in CLASSES for line in (lines[0], lines[2]))


def test_served_model_answers_per_row_in_every_request_format(files, tmp_path, forget_tracking_uri):
    """The logged pyfunc model loaded for real; each payload parsed by MLflow's own scoring-server parser."""
    import mlflow

    good, bad = files
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _classifier().save(model_dir / MODEL_FILE)
    summary_of(CLASSES).save(model_dir / SUMMARY_FILE)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("served")  # not the experiment id an earlier test's track() left active (another store's)
    with mlflow.start_run():
        info = log_pyfunc_model(model_dir, True, good[0])
    model = mlflow.pyfunc.load_model(info.model_uri)
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in (good[0], bad, good[1])]
    payloads = {
        "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": [[b] for b in b64]}},
        "dataframe_records": {"dataframe_records": [{"image": b} for b in b64]},
        "inputs": {"inputs": {"image": b64}},
        "instances": {"instances": [{"image": b} for b in b64]},
    }
    answers = {}
    for name, payload in payloads.items():
        rows = model.predict(infer_and_parse_data(json.loads(json.dumps(payload)), SIGNATURE.inputs))
        answers[name] = rows.to_dict("records")
        assert [r["error"] is None for r in answers[name]] == [True, False, True], name
        assert answers[name][1]["error"].startswith("TensorFlow cannot decode"), name
    first = answers["dataframe_split"]
    for name, rows in answers.items():
        for got, want in zip(rows, first):
            assert got["class"] == want["class"], name
            if want["probabilities"]:
                assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6), name
    assert np.isclose(sum(first[0]["probabilities"].values()), 1)
