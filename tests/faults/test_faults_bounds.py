"""Bounded memory (issue #24, round 3): an image whose header declares more decoded pixels than the bound is
refused before any decoding. prepare quarantines it with the bound in its reason, predict answers an error for
it, and a real `mlflow models serve` answers HTTP 400 naming the bound (so it does for too many rows, and 429
while its decode turns stay taken) and goes on answering good requests."""

import base64
import csv
import io
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import pytest
from PIL import Image

from pipeline.data.images import MAX_MEGAPIXELS
from pipeline.layout import MODEL_FILE, SUMMARY_FILE
from pipeline.model.predictor import Predictor
from pipeline.predict import predict
from pipeline.tracking import served
from tests.helpers.faults import large_png
from tests.helpers.images import make_image
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env, start, stop
from tests.helpers.servers import free_port, wait_healthy
from tests.helpers.tracking import summary_of

BOUND = f"above the bound of {MAX_MEGAPIXELS} MP per image"


def _small(fmt: str, **kw) -> bytearray:
    out = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 100, 50)).save(out, fmt, **kw)
    return bytearray(out.getvalue())


def _tiff(width: int, height: int) -> bytes:
    """An 8-bit grey TIFF declaring width x height, holding 16 bytes of pixels."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1)]
    tags += [(278, 4, height), (279, 4, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, kind, 1, v) for t, kind, v in tags)
    return b"II*\0" + struct.pack("<I", 24) + bytes(16) + ifd + bytes(4)


def header_only() -> dict[str, tuple[bytes, str]]:
    """Files of a 2x2 image whose headers declare a huge one (decoding them would fail: no such data), with
    the decoded size the reason must name. The JPEG counts at the 1/8 scale it would be decoded at."""
    gif, bmp, jpeg, webp = _small("GIF"), _small("BMP"), _small("JPEG"), _small("WEBP", lossless=True)
    gif[6:10] = struct.pack("<HH", 16000, 16000)  # logical screen
    bmp[18:26] = struct.pack("<ii", 16000, 16000)
    sof = jpeg.index(b"\xff\xc0") + 5
    jpeg[sof : sof + 4] = struct.pack(">HH", 65000, 65000)
    vp8l = webp.index(b"VP8L") + 9  # after the chunk header and the 0x2f signature: 14 bits width-1, height-1
    bits = int.from_bytes(webp[vp8l : vp8l + 4], "little")
    webp[vp8l : vp8l + 4] = (bits & ~(2**28 - 1) | 16383 | 16383 << 14).to_bytes(4, "little")
    return {
        "huge.tif": (_tiff(19000, 19000), "19000x19000 px is 361 MP"),
        "huge.gif": (bytes(gif), "16000x16000 px is 256 MP"),
        "huge.bmp": (bytes(bmp), "16000x16000 px is 256 MP"),
        "huge.jpg": (bytes(jpeg), "8125x8125 px is 66 MP"),
        "huge.webp": (bytes(webp), "16384x16384 px is 268 MP"),
    }


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> dict[str, Path]:
    """Complete one-colour PNGs (about 1 MB each for the big ones): 19999x19999, 18000x18000, and 8000x8000 at
    the bound (64 MP)."""
    tmp = tmp_path_factory.mktemp("large")
    sides = {"19999": (19999, 19999), "18000": (18000, 18000), "at_bound": (8000, 8000)}
    return {name: large_png(tmp / f"{name}.png", *size) for name, size in sides.items()}


def test_prepare_quarantines_what_is_over_the_pixel_bound_from_the_header(large, tmp_path):
    raw = tmp_path / "raw" / "pets"
    for c, name in enumerate(("cats", "dogs")):
        for i in range(8):
            make_image(raw / name / f"{i}.jpg", c, i)
    (raw / "dogs" / "huge.png").write_bytes(large["19999"].read_bytes())
    for name, (data, _) in header_only().items():
        (raw / "cats" / name).write_bytes(data)
    params = write_params(tmp_path / "params.yaml", tiny_params())
    args = ["--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "prepared")]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.prepare", *args, "--summary", str(tmp_path / "prepare.json")],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "prepared" / "quarantine.csv", newline="") as f:
        reasons = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    expected = {f"pets/cats/{name}": size for name, (_, size) in header_only().items()}
    expected["pets/dogs/huge.png"] = "19999x19999 px is 400 MP"
    assert set(reasons) == set(expected)
    for path, size in expected.items():
        assert reasons[path] == f"too large to decode safely: {size} decoded, {BOUND}", path


def test_predict_answers_an_error_naming_the_bound(large, tmp_path):
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    got = predict([str(large["18000"])], Predictor(model, ["a", "b"], 16, False))
    assert got[0].error == f"too large to decode safely: 18000x18000 px is 324 MP decoded, {BOUND}"


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5"])
def test_a_bad_bound_in_the_environment_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("PIPELINE_SERVE_MAX_ROWS", value)
    with pytest.raises(ValueError, match=f"PIPELINE_SERVE_MAX_ROWS='{value}': expected a whole number >= 1"):
        served.bounds()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow models serve` of a small image model, with 8 rows per request and one decode turn, waited for
    at most 1 s; yields its URL."""
    import mlflow

    tmp = tmp_path_factory.mktemp("serve_bounds")
    model_dir = tmp / "model"
    model_dir.mkdir()
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled)).save(model_dir / MODEL_FILE)
    summary_of(["cats", "dogs"]).save(model_dir / SUMMARY_FILE)
    make_image(tmp / "good.jpg", 0, 0)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    try:
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("bounds", (tmp / "mlruns").as_uri()))
        with mlflow.start_run():
            uri = served.log_pyfunc_model(model_dir, False, tmp / "good.jpg").model_uri
    finally:
        mlflow.set_tracking_uri(None)
    port, log = free_port(), tmp / "serve.log"
    bounds = {"PIPELINE_SERVE_MAX_ROWS": "8", "PIPELINE_SERVE_DECODERS": "1", "PIPELINE_SERVE_WAIT_S": "1"}
    environ = {**os.environ, **bounds, "MLFLOW_TRACKING_URI": store}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # uvicorn, by name
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    proc = start([*command, "--host", "127.0.0.1", "--port", str(port)], tmp, log, environ)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/ping", proc, log, timeout=150)
        yield url, (tmp / "good.jpg").read_bytes()
    finally:
        stop(proc)


def _post(url: str, files: list[bytes]) -> tuple[int, dict]:
    rows = [[base64.b64encode(f).decode()] for f in files]
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _still_answers(url: str, good: bytes) -> None:
    status, answer = _post(url, [good])
    assert status == 200 and answer["predictions"][0]["class"] in ("cats", "dogs"), answer


def test_served_model_refuses_concurrent_oversized_images_and_stays_up(server, large):
    url, good = server
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _post(url, [good, large["18000"].read_bytes()]), range(3)))
    for status, answer in answers:
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert answer["message"].endswith(
            f"row 1: too large to decode safely: 18000x18000 px is 324 MP decoded, {BOUND} "
            "(PIPELINE_SERVE_MAX_IMAGE_MP)"
        )
    _still_answers(url, good)


def test_served_model_refuses_too_many_rows_and_stays_up(server):
    url, good = server
    status, answer = _post(url, [good] * 9)
    assert status == 400 and answer["message"].endswith(
        "9 rows in one request, above the bound of 8 (PIPELINE_SERVE_MAX_ROWS)"
    ), answer
    status, answer = _post(url, [good] * 8)
    assert status == 200 and len(answer["predictions"]) == 8
    _still_answers(url, good)


def test_served_model_decodes_one_request_at_a_time_the_next_gets_429(server, large):
    """One decode turn, waited for 1 s: of two requests of 4 images at the bound (seconds of decoding each),
    one is answered and the other refused while the first still holds the turn."""
    url, good = server
    at_bound = large["at_bound"].read_bytes()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _post(url, [at_bound] * 4), range(2)))
    assert sorted(status for status, _ in answers) == [200, 429], answers
    refused = next(answer for status, answer in answers if status == 429)
    assert refused["error_code"] == "RESOURCE_EXHAUSTED"
    assert refused["message"].endswith(
        "all 1 decode turn(s) (PIPELINE_SERVE_DECODERS) stayed taken for 1 s (PIPELINE_SERVE_WAIT_S): retry later"
    )
    _still_answers(url, good)
