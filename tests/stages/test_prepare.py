"""Data checks: manifest complete, splits disjoint, stratified and deterministic for a seed."""

from collections import Counter

import pytest

from pipeline.contracts import PrepareSummary
from pipeline.data.dataset import DatasetError
from pipeline.data.manifest import read_manifest
from pipeline.stages.prepare import prepare
from tests.helpers.images import make_dataset, make_image
from tests.helpers.params import tiny_config


def _run(raw, out, **split):
    cfg = tiny_config({"split": {"seed": 3, **split}}).split
    summary = prepare(raw, out / "prepared", out / "prepare.json", cfg, processes=1)
    return summary, read_manifest(out / "prepared" / "manifest.csv")


def test_archive_layout_keeps_train_and_carves_test_from_validation(tmp_path):
    make_dataset(tmp_path / "raw" / "wrapper", per_class=20)  # 12 train + 8 validation per class
    summary, rows = _run(tmp_path / "raw", tmp_path / "o")
    assert len(rows) == 40 and summary.images == 40
    per = Counter((r.label, r.split) for r in rows)
    for c in ("cats", "dogs"):
        assert per[(c, "train")] == 12 and per[(c, "validation")] == 4 and per[(c, "test")] == 4
    assert all(r.source.startswith("train/") for r in rows if r.split == "train")
    assert all(r.source.startswith("validation/") for r in rows if r.split != "train")
    assert PrepareSummary.load(tmp_path / "o" / "prepare.json") == summary
    assert len({r.sha256 for r in rows}) == 40


def test_flat_layout_is_split_stratified_and_disjoint(tmp_path):
    make_dataset(tmp_path / "raw", n_classes=3, per_class=20, layout="flat")
    _, rows = _run(tmp_path / "raw", tmp_path / "o", validation=0.2, test=0.25)
    assert len({r.source for r in rows}) == len(rows) == 60
    per = Counter((r.label, r.split) for r in rows)
    for c in ("cats", "dogs", "birds"):
        assert (per[(c, "train")], per[(c, "validation")], per[(c, "test")]) == (11, 4, 5)


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    make_dataset(tmp_path / "raw", per_class=30, layout="flat")
    _, a = _run(tmp_path / "raw", tmp_path / "a")
    _, b = _run(tmp_path / "raw", tmp_path / "b")
    _, c = _run(tmp_path / "raw", tmp_path / "c", seed=4)
    split = lambda rows: {r.source: r.split for r in rows}  # noqa: E731
    assert split(a) == split(b)
    assert split(a) != split(c)


def test_identical_images_across_splits_are_reported(tmp_path):
    raw = make_dataset(tmp_path / "raw", per_class=20)
    (raw / "validation" / "cats" / "copy.jpg").write_bytes((raw / "train" / "cats" / "cats.0.jpg").read_bytes())
    summary, _ = _run(tmp_path / "raw", tmp_path / "o")
    assert summary.cross_split_duplicates == 1
    assert "cats.0.jpg" in (tmp_path / "o" / "prepared" / "duplicates.csv").read_text()


def test_single_class_stops_with_a_message(tmp_path):
    for i in range(10):
        make_image(tmp_path / "raw" / "cats" / f"{i}.jpg", 0, i)
    with pytest.raises(DatasetError, match="need at least 2"):
        _run(tmp_path / "raw", tmp_path / "o")
    assert not (tmp_path / "o" / "prepared").exists()
