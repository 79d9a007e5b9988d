"""The project's structure, checked from the source: each DVC stage's code deps are exactly what its module
imports, stages sit on top of the library folders, flows stay free of TensorFlow, files stay short, dvc.yaml
and pipeline/layout.py name the same paths, and params.yaml is the only place a value is set.

Every check is a function returning its problems (tests/helpers/structure.py); each is also run on a
mutilated input, to show it does fail."""

import copy
import sys

import pytest
from pydantic import BaseModel

import pipeline.config
from pipeline.config import load_config
from tests.helpers import REPO
from tests.helpers.structure import (
    code_closure,
    code_dep_problems,
    flow_problems,
    foreach_problems,
    layering_problems,
    layout_problems,
    load_dvc_yaml,
    long_file_problems,
    schema_default_problems,
    stage_import_problems,
    stage_module,
)

DVC = load_dvc_yaml()


def test_every_pipeline_stage_runs_a_module_of_pipeline_stages():
    modules = {name: stage_module(stage["cmd"]) for name, stage in DVC["stages"].items()}
    assert modules == {name: f"pipeline.stages.{name}" for name in DVC["stages"]}


def test_code_deps_are_exactly_each_stage_modules_import_closure():
    assert code_dep_problems(DVC) == []


def test_the_closure_skips_empty_package_files_and_keeps_the_others():
    files = code_closure("pipeline.stages.extract")
    assert "pipeline/stages/__init__.py" not in files  # empty
    assert "pipeline/model/__init__.py" in files  # sets TF_CPP_MIN_LOG_LEVEL: code that runs
    assert {"pipeline/stages/extract.py", "pipeline/model/features.py", "pipeline/layout.py"} <= files


@pytest.mark.parametrize("stage", ["extract", "track"])
def test_a_missing_code_dep_is_reported_with_its_stage(stage):
    dvc = copy.deepcopy(DVC)
    deps = dvc["stages"][stage]["deps"]
    deps.remove("pipeline/layout.py")
    deps.append("pipeline/predict.py")
    assert code_dep_problems(dvc) == [
        f"stage {stage}: deps lack ['pipeline/layout.py'], which pipeline.stages.{stage} imports",
        f"stage {stage}: deps list ['pipeline/predict.py'], which pipeline.stages.{stage} does not import",
    ]


def test_stages_do_not_import_each_other(tmp_path):
    assert stage_import_problems() == []
    stages = tmp_path / "pipeline" / "stages"
    stages.mkdir(parents=True)
    for name in ("__init__.py", "extract.py"):
        (stages / name).write_text("")
    (stages / "evaluate.py").write_text("from pipeline.stages.extract import extract\n")
    assert stage_import_problems(tmp_path) == ["pipeline/stages/evaluate.py imports pipeline/stages/extract.py"]


def test_library_folders_and_flows_do_not_import_the_stages(tmp_path):
    assert layering_problems() == []
    (tmp_path / "pipeline" / "stages").mkdir(parents=True)
    (tmp_path / "flows").mkdir()
    for name in ("pipeline/__init__.py", "pipeline/stages/__init__.py", "pipeline/stages/prepare.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "flows" / "f.py").write_text("def f():\n    from pipeline.stages import prepare\n")
    assert layering_problems(tmp_path) == [
        "flows/f.py imports pipeline/stages/__init__.py",
        "flows/f.py imports pipeline/stages/prepare.py",
    ]


def test_flows_reach_neither_tensorflow_nor_the_heavy_folders(tmp_path):
    assert flow_problems() == []
    for folder in ("pipeline/model", "flows"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "model" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "model" / "heads.py").write_text("import keras\n")
    (tmp_path / "pipeline" / "config.py").write_text("import tensorflow as tf\n")
    (tmp_path / "flows" / "f.py").write_text("from pipeline import config\nfrom pipeline.model.heads import x\n")
    assert flow_problems(tmp_path) == [
        "flows/f.py reaches ['pipeline/model/__init__.py', 'pipeline/model/heads.py']",
        "flows/f.py reaches pipeline/config.py, which imports ['tensorflow']",
        "flows/f.py reaches pipeline/model/heads.py, which imports ['keras']",
    ]


def test_python_files_are_at_most_250_lines(tmp_path):
    assert long_file_problems() == []
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "long.py").write_text("pass\n" * 251)
    (tmp_path / "tests" / "ok.py").write_text("pass\n" * 250)
    assert long_file_problems(tmp_path) == ["tests/long.py: 251 lines (at most 250)"]


def test_dvc_yaml_paths_are_those_of_the_layout():
    assert layout_problems(DVC) == []


def test_a_path_outside_the_layout_is_reported():
    dvc = copy.deepcopy(DVC)
    dvc["stages"]["evaluate"]["outs"].append("data/${item}/reports/extra.html")
    dvc["stages"]["train_dense"]["deps"] = ["data/${item}/feature"]  # a typo
    dvc["plots"].append("data/${default_dataset}/plot.png")
    dvc["metrics"].append("data/${item}/execution/extract.json")  # top level: no ${item} there
    stage = dvc["stages"]["extract"]
    stage["cmd"] = stage["cmd"].replace("execution/extract.json", "execution/x.json")
    assert layout_problems(dvc) == [
        "stage train_dense deps: data/${item}/feature is neither a path of pipeline/layout.py nor inside "
        "one of its folders",
        "top-level metrics: data/${item}/execution/extract.json is neither a path of pipeline/layout.py nor "
        "inside one of its folders",
        "top-level plots: data/${default_dataset}/plot.png is neither a path of pipeline/layout.py nor inside one of "
        "its folders",
        "stage extract cmd: --execution data/${item}/execution/x.json is not data/${item}/execution/extract.json",
        "stage evaluate outs: data/${item}/reports/extra.html is not a path of pipeline/layout.py",
    ]


def test_every_stage_but_source_runs_once_per_dataset():
    raw = load_dvc_yaml(raw=True)
    assert foreach_problems(raw) == []
    raw["stages"]["evaluate"] = raw["stages"]["evaluate"]["do"]
    assert foreach_problems(raw) == ["stage evaluate: foreach is None, not ${dataset_names}"]


def test_schema_has_no_defaults_and_params_yaml_validates():
    # A dataset's pins may be left out (`-S '+datasets.x.url=…'` adds a dataset by its URL alone): null.
    assert schema_default_problems(pipeline.config, frozenset({"DataConfig.sha256", "DataConfig.size"})) == []
    assert schema_default_problems(pipeline.config)[:1] == ["DataConfig.sha256 has a default (None)"]
    assert set(load_config(REPO / "params.yaml").flat())  # every key present and valid


class _WithDefault(BaseModel):  # what test_schema_defaults_are_found must catch
    required: int
    optional: int = 3


def test_schema_defaults_are_found():
    assert schema_default_problems(sys.modules[__name__]) == ["_WithDefault.optional has a default (3)"]
