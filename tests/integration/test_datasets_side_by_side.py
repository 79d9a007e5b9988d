"""Datasets side by side, as README's "Another dataset" documents it: `dvc exp run -S '+datasets.<name>.url=…'`
in a committed project stops once at `source` (the checked stage list gains the name), then `dvc exp run` runs
every stage of the new dataset and none of the first one's (their outputs stay as
they are); each dataset gets its own MLflow experiment. The way back from that workspace experiment,
`git restore . && dvc checkout`, gives the one-dataset dvc.lock and outputs back, and `dvc repro` recomputes
nothing; the two-dataset run stays available as a DVC experiment."""

import hashlib
import json
import re
import subprocess
import sys

import yaml

from pipeline.config import load_params
from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import copy_repo, git
from tests.helpers.structure import dvc_stage_names


def _dvc(root, *args, timeout=900) -> str:
    """`dvc <args>` in `root`, which must succeed; its stdout (DVC's progress and warnings go to stderr)."""
    environ = env()
    environ.pop("MLFLOW_TRACKING_URI", None)  # track logs into the copy's own mlflow.db
    done = subprocess.run(["dvc", *args], cwd=root, env=environ, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _cached_outs(root) -> dict[str, str]:
    """Every cached output dvc.lock names -> the md5 DVC recorded (folders: their .dir listing's)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


def _file_md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _ran(output: str) -> list[str]:
    return re.findall(r"^Running stage '([^']+)'", output, re.MULTILINE)


def test_a_second_dataset_runs_beside_the_first_and_the_way_back_recomputes_nothing(tmp_path):
    root = copy_repo(tmp_path / "project")
    first, second = (zip_dir(make_dataset(tmp_path / "src" / n, per_class=12), tmp_path / f"{n}.zip") for n in "ab")
    write_params(root / "params.yaml", tiny_params({"data": {"name": "first", "url": str(first)}}))
    git(root, "init", "-q")
    assert set(_ran(_dvc(root, "repro"))) == dvc_stage_names(["first"])
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first dataset")
    before = _cached_outs(root)
    before_first = {k: v for k, v in before.items() if k.startswith("data/first/")}
    model = root / "data/first/models/finetune/model.keras"
    model_md5, model_mtime = _file_md5(model), model.stat().st_mtime_ns

    stopped = subprocess.run(
        ["dvc", "exp", "run", "-S", f"+datasets.second.url={second}"],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
    )  # `source` adds the new name to the stage list, then stops: DVC built this run's stages from the old one
    assert stopped.returncode != 0 and "added ['second']" in stopped.stdout + stopped.stderr
    assert _ran(stopped.stdout) == ["source"]
    added = _dvc(root, "exp", "run", "--name", "two-datasets")
    assert set(_ran(added)) == dvc_stage_names(["second"])  # source, and the second dataset's stages only
    assert (root / "data/second/models/finetune/model.keras").is_file()
    assert (_file_md5(model), model.stat().st_mtime_ns) == (model_md5, model_mtime)  # not rewritten
    assert list(load_params(root / "params.yaml")["datasets"]) == ["first", "second"]
    assert {k: v for k, v in _cached_outs(root).items() if k.startswith("data/first/")} == before_first
    records = {n: json.loads((root / f"data/{n}/reports/mlflow.json").read_text()) for n in ("first", "second")}
    assert records["first"]["experiment_id"] != records["second"]["experiment_id"]  # one MLflow experiment each
    assert json.loads(_dvc(root, "status", "--json")).keys() <= {"source"}  # both datasets up to date
    _compare_fits_and_has_both_datasets(root)

    # The way back (README): params.yaml and dvc.lock from git, the outputs from DVC's cache.
    git(root, "restore", ".")
    _dvc(root, "checkout")
    assert _cached_outs(root) == before
    assert _file_md5(model) == model_md5
    status = json.loads(_dvc(root, "status", "--json"))
    assert set(status) <= {"source"}, status  # `source` is always_changed: it re-checks every url on each repro
    assert _ran(_dvc(root, "repro")) == ["source"]  # nothing recomputed
    assert "two-datasets" in _dvc(root, "exp", "list", "--name-only")  # the two-dataset run is kept


def _compare_fits_and_has_both_datasets(root):
    """README's experiment table: a row per (experiment, dataset) with both heads' numbers, in 100 columns (with
    two datasets `dvc exp show --keep` on metric names keeps nothing: DVC prefixes them with the file path)."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.compare", "-n", "1"], cwd=root, env=env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 100, done.stdout
    rows = {tuple(line.split()[:2]) for line in lines[2:]}
    assert {("workspace", "first"), ("workspace", "second"), ("two-datasets", "second")} <= rows, done.stdout
    for line in lines[2:]:
        assert re.fullmatch(r"\s*\S+\s+\S+(\s+\d+\.\d\d%\s+\d\.\d{4}){2}", line), line
