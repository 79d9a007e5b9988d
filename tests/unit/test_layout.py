"""The one map of the project's files: every path a stage reads or writes under data/<name>/."""

from pathlib import Path

import pytest

from pipeline.layout import HEADS, DatasetLayout, plot_files


def test_paths_of_one_dataset():
    data = DatasetLayout.of("cats", "/project")
    root = Path("/project/data/cats")
    assert data.root == root
    assert (data.raw, data.download_info, data.prepare_summary) == (
        root / "raw",
        root / "download.json",
        root / "prepare.json",
    )
    assert (data.manifest, data.quarantine) == (root / "prepared/manifest.csv", root / "prepared/quarantine.csv")
    assert data.features == root / "features"
    assert [data.model_file(h) for h in HEADS] == [
        root / "models/dense/model.keras",
        root / "models/finetune/model.keras",
    ]
    assert (data.metrics, data.report, data.mlflow_record) == (
        root / "reports/metrics.json",
        root / "reports/report.html",
        root / "reports/mlflow.json",
    )
    assert data.plots == root / "reports/plots"


def test_execution_records_lie_outside_every_stage_output():
    data = DatasetLayout.of("cats")
    record = data.execution("extract")
    assert record == Path("data/cats/execution/extract.json")
    outputs = [data.raw, data.prepared, data.features, *(data.model_dir(h) for h in HEADS), data.reports]
    assert not any(record.is_relative_to(out) for out in outputs)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown head 'tiny'"):
        DatasetLayout.of("cats").model_dir("tiny")


def test_plot_file_names_are_those_the_outputs_had():
    assert plot_files("dense") == (
        "confusion_dense.png",
        "curves_dense.png",
        "gradcam_dense.png",
        "misclassified_dense.png",
        "misclassified_dense.csv",
        "predictions_dense.csv",
        "roc_dense.csv",
        "roc.png",
    )
