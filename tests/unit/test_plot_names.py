"""dvc.yaml spells the evaluation plots' file names (DVC imports no Python): each path it names in a reports/plots
folder is a file name of pipeline/layout.py's registry, so a plot renamed in one place fails here."""

import copy
from pathlib import Path

from pipeline.layout import HEADS, ROC_PNG, DatasetLayout, plot_files, predictions_csv, roc_csv
from tests.helpers.structure import STAGE_DATA, TOP_DATA, load_dvc_yaml, yaml_strings

DVC = load_dvc_yaml()
PLOTS = {DatasetLayout(Path(STAGE_DATA)).plots, DatasetLayout(Path(TOP_DATA)).plots}


def plot_names(dvc: dict) -> set[str]:
    """The file names dvc.yaml gives in a reports/plots folder (any stage's or the top-level entries)."""
    return {Path(s).name for s in yaml_strings(dvc) if Path(s).parent in PLOTS}


def plot_name_problems(dvc: dict) -> list[str]:
    known = {name for head in HEADS for name in plot_files(head)}
    return [f"dvc.yaml names plot {name}, not one of pipeline/layout.py" for name in sorted(plot_names(dvc) - known)]


def test_dvc_yaml_plot_files_are_the_registry_s():
    assert plot_name_problems(DVC) == []
    assert {ROC_PNG, predictions_csv("finetune"), roc_csv("dense")} <= plot_names(DVC)  # the check sees them


def test_a_plot_name_outside_the_registry_is_reported():
    dvc = copy.deepcopy(DVC)
    dvc["plots"].append("data/${default_dataset}/reports/plots/confusion-dense.png")
    dvc["stages"]["evaluate"]["outs"].append("data/${item}/reports/plots/roc_curve.png")
    assert plot_name_problems(dvc) == [
        "dvc.yaml names plot confusion-dense.png, not one of pipeline/layout.py",
        "dvc.yaml names plot roc_curve.png, not one of pipeline/layout.py",
    ]
