"""Fault suite, images: every odd or broken file is converted correctly or quarantined with its reason, nothing
is dropped silently, and TensorFlow reads every file that prepare accepts."""

import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from pipeline.contracts import PrepareSummary
from pipeline.data import images
from pipeline.data.manifest import read_manifest
from pipeline.model.inputs import load_image
from tests.helpers.faults import HUGE, make_fault_dataset
from tests.helpers.images import make_image
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env


def _prepare_cli(tmp, raw):
    """Run the prepare stage as DVC does; return the finished process (stderr holds the log)."""
    params = write_params(tmp / "params.yaml", tiny_params())
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.stages.prepare",
            "--params",
            str(params),
            "--raw",
            str(raw),
            "--out",
            str(tmp / "prepared"),
            "--summary",
            str(tmp / "prepare.json"),
        ],
        cwd=tmp,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    expected = make_fault_dataset(tmp / "raw")
    proc = _prepare_cli(tmp, tmp / "raw")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp / "prepared" / "quarantine.csv", newline="") as f:
        quarantine = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    rows = {f"pets/{r.source}": r for r in read_manifest(tmp / "prepared" / "manifest.csv")}
    return {
        "tmp": tmp,
        "expected": expected,
        "rows": rows,
        "quarantine": quarantine,
        "log": proc.stderr,
        "summary": PrepareSummary.load(tmp / "prepare.json"),
    }


def _outcome(run, rel):
    if rel in run["rows"]:
        return "converted" if "/converted/" in run["rows"][rel].path else "ok"
    return run["quarantine"].get(rel, "MISSING")


def test_each_fault_has_its_expected_outcome(run):
    wrong = {
        rel: (want, _outcome(run, rel))
        for rel, want in run["expected"].items()
        if not any(_outcome(run, rel).startswith(w) for w in want.split("|"))
    }
    assert not wrong


def test_nothing_is_dropped_silently(run):
    on_disk = {p.relative_to(run["tmp"] / "raw").as_posix() for p in (run["tmp"] / "raw").rglob("*") if p.is_file()}
    assert on_disk == set(run["expected"])
    assert on_disk == set(run["rows"]) | set(run["quarantine"])
    assert not set(run["rows"]) & set(run["quarantine"])


def test_summary_and_log_count_every_reason(run):
    summary, quarantine = run["summary"], run["quarantine"]
    assert summary.quarantined == len(quarantine) and summary.images == len(run["rows"])
    assert summary.quarantine_reasons == dict(Counter(r.split(":")[0] for r in quarantine.values()))
    assert summary.classes == ["cats", "dogs"] and summary.empty_class_folders == ["birds"]
    for reason, n in summary.quarantine_reasons.items():
        assert f"quarantined {n} file(s): {reason}" in run["log"]
    assert "quarantine.csv" in run["log"] and "'birds' holds no image files" in run["log"]


def test_tensorflow_reads_every_image_prepare_accepts(run):
    for rel, row in run["rows"].items():
        image = load_image(tf.constant(row.path), 32).numpy()
        assert image.shape == (32, 32, 3) and np.isfinite(image).all(), rel


def _decoded(run, rel):
    """The pixels the model will see, at full size, as TensorFlow decodes them."""
    data = tf.io.read_file(run["rows"][rel].path)
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy().astype(int)


RED, BLUE, WHITE = (230, 20, 20), (20, 20, 230), (255, 255, 255)


@pytest.mark.parametrize("name, top, bottom", [("exif6.jpg", RED, BLUE), ("exif8.jpg", BLUE, RED)])
def test_exif_rotation_is_applied_to_the_pixels(run, name, top, bottom):
    # stored 60x40, left half red: orientation 6 (turn clockwise) puts red on top, 8 (counter-clockwise) below
    image = _decoded(run, f"pets/cats/{name}")
    assert image.shape == (60, 40, 3)
    assert np.abs(image[:25].mean((0, 1)) - top).max() < 12
    assert np.abs(image[35:].mean((0, 1)) - bottom).max() < 12


def test_converted_pixels_are_right(run):
    alpha = _decoded(run, "pets/cats/alpha.png")
    assert tuple(alpha[0, 0]) == WHITE and tuple(alpha[20, 50]) == BLUE  # transparent -> white, not black
    assert tuple(_decoded(run, "pets/cats/palette_alpha.png")[0, 0]) == WHITE
    assert (_decoded(run, "pets/cats/grey16.png") == round(40000 / 65535 * 255)).all()  # scaled, not clipped
    assert tuple(_decoded(run, "pets/cats/rgb16.png")[0, 0]) == (255, 128, 10)
    assert (_decoded(run, "pets/cats/float.tif") == 128).all()  # float 0.5 of 0..1
    for name in ("cmyk.jpg", "palette.gif", "lossless.webp", "palette.bmp", "photo.tif", "animated.gif"):
        image = _decoded(run, f"pets/cats/{name}")
        assert image.shape == (40, 60, 3), name
        assert np.abs(image[:, :25].mean((0, 1)) - RED).max() < 15, name
    assert _decoded(run, "pets/dogs/huge.jpg").shape == (3072, 4096, 3)  # downscaled to MAX_SIDE, aspect kept


def test_huge_jpeg_is_decoded_downscaled_with_bounded_memory(run, tmp_path):
    """12000x9000 RGB is 324 MB decoded: the check must stay below that (it decodes at reduced scale)."""
    code = (
        "import re, sys; from pathlib import Path; from pipeline.data.images import check_image\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (pytest's own peak)
        "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]) * 1024\n"
        "before = peak(); r = check_image(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print(r.reason, r.width, r.height, peak() - before)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run["tmp"] / "raw/pets/dogs/huge.jpg"), str(tmp_path / "h.png")],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    reason, width, height, grew = out.stdout.split()
    assert (reason, int(width), int(height)) == ("None", 4096, 3072), out.stderr
    assert int(grew) < HUGE[0] * HUGE[1] * 3


def test_any_decoder_exception_quarantines_instead_of_crashing(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise ZeroDivisionError("division by zero in a plugin")

    monkeypatch.setattr(images.Image, "open", explode)
    image = tmp_path / "x.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    result = images.check_image(image, tmp_path / "x.png")
    assert result.reason == "cannot decode: ZeroDivisionError: division by zero in a plugin"


def _classes(raw, counts, bad=0):
    for c, n in enumerate(counts):
        (raw / f"class{c}").mkdir(parents=True)
        for i in range(n):
            make_image(raw / f"class{c}" / f"{i}.jpg", c, i)
    for i in range(bad):  # broken files in the first class
        (raw / "class0" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not really")


@pytest.mark.parametrize(
    "counts, bad, message",
    [
        ((12,), 0, "found 1 non-empty class folder(s) ['class0']; need at least 2"),
        ((12, 2), 0, "class 'class1' has 2 usable image(s), too few"),
        ((0, 12), 6, "class 'class0' has 0 usable image(s), too few"),  # every image of a class is broken
    ],
)
def test_unusable_dataset_stops_with_a_message_naming_the_problem(tmp_path, counts, bad, message):
    _classes(tmp_path / "raw", counts, bad)
    proc = _prepare_cli(tmp_path, tmp_path / "raw")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "prepare.json").exists()
    if bad:
        assert f"quarantined {bad} file(s): not an image" in proc.stderr  # why the class came up short


def test_missing_raw_folder_is_a_clear_error(tmp_path):
    proc = _prepare_cli(tmp_path, tmp_path / "nowhere")
    assert proc.returncode == 2 and "no such folder" in proc.stderr and "Traceback" not in proc.stderr
