"""The one map of the project's files: every path a stage reads or writes under data/<name>/."""

from pathlib import Path

import pytest

from pipeline.layout import HEADS, DatasetLayout, plot_files


def test_paths_of_one_dataset():
    layout = DatasetLayout.of("cats", "/project")
    root = Path("/project/data/cats")
    assert layout.root == root
    assert (layout.raw, layout.download_info, layout.prepare_summary) == (
        root / "raw",
        root / "download.json",
        root / "prepare.json",
    )
    assert (layout.manifest, layout.quarantine) == (root / "prepared/manifest.csv", root / "prepared/quarantine.csv")
    assert layout.features == root / "features"
    assert [layout.model_file(h) for h in HEADS] == [
        root / "models/dense/model.keras",
        root / "models/finetune/model.keras",
    ]
    assert (layout.metrics, layout.report, layout.mlflow_record) == (
        root / "reports/metrics.json",
        root / "reports/report.html",
        root / "reports/mlflow.json",
    )
    assert layout.plots == root / "reports/plots"


def test_execution_records_lie_outside_every_stage_output():
    layout = DatasetLayout.of("cats")
    record = layout.execution("extract")
    assert record == Path("data/cats/execution/extract.json")
    outputs = [layout.raw, layout.prepared, layout.features, *(layout.model_dir(h) for h in HEADS), layout.reports]
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
