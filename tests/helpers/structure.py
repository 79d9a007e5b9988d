"""Checks of the project's structure, read from the source and dvc.yaml (no TensorFlow imported). Each returns
the problems it finds, one line each, empty when there are none: a test can then show that a check fails on a
mutilated input instead of passing vacuously."""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel

from pipeline.imports import closure, local_imports, module_file
from pipeline.layout import HEADS, SOURCES, DatasetLayout, source_record, stage_id
from tests.helpers import REPO

CODE = ("pipeline/", "flows/")  # dvc.yaml deps under these are code deps
STAGE_DATA = "data/${item}"  # a per-dataset (foreach) stage's folder: ${item} is the dataset's name
FOREACH = "${dataset_names}"  # the checked names of data/datasets.yaml (pipeline/datasets.py), not params.yaml's
TOP_DATA = "data/${default_dataset}"  # top-level metrics and plots cannot loop: the default dataset's (checked)
# Library folders whose modules import TensorFlow, Keras or MLflow: no flow may reach them.
HEAVY = ("pipeline/model/", "pipeline/evaluation/", "pipeline/stages/", "pipeline/tracking/")
HEAVY_PACKAGES = {"tensorflow", "keras", "mlflow"}
MAX_LINES = 250


def load_dvc_yaml(root: Path = REPO, raw: bool = False) -> dict:
    """dvc.yaml, each foreach stage's `do:` body in its place (raw: as written)."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    if not raw:
        dvc["stages"] = {name: stage.get("do", stage) for name, stage in dvc["stages"].items()}
    return dvc


def dvc_stage_names(datasets: list[str], root: Path = REPO) -> set[str]:
    """What DVC calls the stages of `datasets`: `source`, and `<stage>@<dataset>` for each per-dataset stage."""
    per_dataset = [name for name, stage in load_dvc_yaml(root, raw=True)["stages"].items() if "foreach" in stage]
    return {"source"} | {stage_id(stage, d) for stage in per_dataset for d in datasets}


def foreach_problems(dvc: dict) -> list[str]:
    """Every stage but `source` (which checks all datasets at once) runs once per checked dataset name."""
    return [
        f"stage {name}: foreach is {stage.get('foreach')!r}, not {FOREACH}"
        for name, stage in dvc["stages"].items()
        if (name == "source") == (stage.get("foreach") == FOREACH)
    ]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _entry(entry: str | dict) -> str:
    """A deps/outs/metrics entry's path: the string itself, or the key of `- path: {cache: false}`."""
    return entry if isinstance(entry, str) else next(iter(entry))


def stage_module(cmd: str) -> str | None:
    """`pipeline.stages.X` of a `python -m pipeline.stages.X ...` command, else None."""
    words = shlex.split(cmd)
    if words[:2] == ["python", "-m"] and words[2].startswith("pipeline.stages."):
        return words[2]
    return None


def code_closure(module: str, root: Path = REPO) -> set[str]:
    """The module's file and every project file it imports, directly or not, empty __init__.py files aside."""
    files = closure(module_file(module, root), root)
    return {_rel(f, root) for f in files if f.name != "__init__.py" or f.read_text().strip()}


def code_dep_problems(dvc: dict, root: Path = REPO) -> list[str]:
    """Each stage run as `python -m pipeline.stages.X` must list exactly X's import closure as its code deps."""
    problems = []
    for name, stage in dvc["stages"].items():
        module = stage_module(stage["cmd"])
        if module is None:
            continue
        want = code_closure(module, root)
        have = {_entry(d) for d in stage.get("deps", []) if _entry(d).startswith(CODE)}
        if missing := sorted(want - have):
            problems.append(f"stage {name}: deps lack {missing}, which {module} imports")
        if extra := sorted(have - want):
            problems.append(f"stage {name}: deps list {extra}, which {module} does not import")
    return problems


def _py_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*.py") if "__pycache__" not in f.parts)


def stage_import_problems(root: Path = REPO) -> list[str]:
    """No module of pipeline/stages/ imports another one: what stages share lives in the library folders."""
    stages = set(_py_files(root / "pipeline" / "stages"))
    return [
        f"{_rel(f, root)} imports {_rel(g, root)}"
        for f in sorted(stages)
        for g in sorted(local_imports(f, root) & (stages - {f}))
    ]


def layering_problems(root: Path = REPO) -> list[str]:
    """Outside pipeline/stages/ nothing in pipeline/ or flows/ imports pipeline.stages (stages sit on top)."""
    stages = root / "pipeline" / "stages"
    files = [f for f in _py_files(root / "pipeline") + _py_files(root / "flows") if not f.is_relative_to(stages)]
    return [
        f"{_rel(f, root)} imports {_rel(g, root)}"
        for f in files
        for g in sorted(local_imports(f, root))
        if g.is_relative_to(stages)
    ]


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (lazy imports too); relative imports aside."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def flow_problems(root: Path = REPO) -> list[str]:
    """flows/ may use pipeline.config and pipeline.layout, never the stages or the modules that import
    TensorFlow (orchestration stays light): no file of HEAVY in any flow's closure, no TF/Keras/MLflow import."""
    problems = []
    for flow in _py_files(root / "flows"):
        files = closure(flow, root)
        if heavy := sorted(_rel(f, root) for f in files if _rel(f, root).startswith(HEAVY)):
            problems.append(f"{_rel(flow, root)} reaches {heavy}")
        for f in sorted(files):
            if found := sorted(third_party_imports(f) & HEAVY_PACKAGES):
                problems.append(f"{_rel(flow, root)} reaches {_rel(f, root)}, which imports {found}")
    return problems


def long_file_problems(root: Path = REPO, folders=("pipeline", "flows", "tests", "benchmarks")) -> list[str]:
    counts = {f: len(f.read_text().splitlines()) for folder in folders for f in _py_files(root / folder)}
    return [f"{_rel(f, root)}: {n} lines (at most {MAX_LINES})" for f, n in counts.items() if n > MAX_LINES]


def layout_paths(layout: DatasetLayout, stages: list[str]) -> set[Path]:
    """Every path pipeline/layout.py names for one dataset (its root aside)."""
    paths = {getattr(layout, name) for name, value in vars(DatasetLayout).items() if isinstance(value, property)}
    paths |= {layout.model_dir(h) for h in HEADS} | {layout.model_file(h) for h in HEADS}
    return paths | {layout.execution(s) for s in stages} | {SOURCES, source_record(layout.root.name)}


def yaml_strings(node: object) -> Iterator[str]:
    """Every key or value under `node` (a parsed YAML document) that is a string (plots' `y:` mappings included)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from yaml_strings(key)
            yield from yaml_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from yaml_strings(item)
    elif isinstance(node, str):
        yield node


def _data_strings(node: object) -> Iterator[str]:
    """Every key or value under `node` that is a path under data/."""
    return (s for s in yaml_strings(node) if s.startswith("data/"))


def layout_problems(dvc: dict) -> list[str]:
    """dvc.yaml's data paths are those of pipeline/layout.py: each one a layout path or inside a layout folder;
    every stage out, and every data path argument of a stage's command, exactly a layout path; the
    --execution record the one of that stage."""
    layout = DatasetLayout(Path(STAGE_DATA))
    known = layout_paths(layout, list(dvc["stages"]))
    top = layout_paths(DatasetLayout(Path(TOP_DATA)), list(dvc["stages"]))
    places = [
        (f"stage {name} {key}", stage.get(key), known)
        for name, stage in dvc["stages"].items()
        for key in ("deps", "outs", "metrics", "plots")
    ]
    places += [("top-level metrics", dvc.get("metrics"), top), ("top-level plots", dvc.get("plots"), top)]
    problems = [
        f"{where}: {text} is neither a path of pipeline/layout.py nor inside one of its folders"
        for where, node, paths in places
        for text in _data_strings(node)
        if Path(text) not in paths and not any(Path(text).is_relative_to(f) for f in paths if not f.suffix)
    ]
    for name, stage in dvc["stages"].items():
        problems += [
            f"stage {name} outs: {out} is not a path of pipeline/layout.py"
            for out in map(_entry, stage.get("outs", []))
            if Path(out) not in known
        ]
        words = shlex.split(stage["cmd"])
        for flag, value in zip(words, words[1:]):
            if not (flag.startswith("--") and value.startswith("data/")):
                continue
            if flag == "--execution" and Path(value) != layout.execution(name):
                problems.append(f"stage {name} cmd: --execution {value} is not {layout.execution(name)}")
            elif Path(value) not in known | {layout.root}:
                problems.append(f"stage {name} cmd: {flag} {value} is not a path of pipeline/layout.py")
    return problems


def schema_default_problems(module, optional: frozenset[str] = frozenset()) -> list[str]:
    """Every field of every pydantic model defined in `module` is required (params.yaml sets every value), but
    those named in `optional` (`Model.field`)."""
    models = [
        m
        for m in vars(module).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == module.__name__
    ]
    return [
        f"{m.__name__}.{name} has a default ({field.default!r})"
        for m in models
        for name, field in m.model_fields.items()
        if not field.is_required() and f"{m.__name__}.{name}" not in optional
    ]
