"""Switching datasets with a workspace experiment and coming back, as README's "Another dataset" documents it:
`dvc exp run -S data.name=... -S data.url=...` in a committed project, then `git restore . && dvc checkout`
brings the first dataset's outputs back from DVC's cache, byte for byte, and `dvc repro` recomputes nothing.
The other dataset's run stays available as a DVC experiment."""

import hashlib
import json
import re
import subprocess

import yaml

from tests.helpers.images import make_dataset, zip_dir
from tests.helpers.params import tiny_params, write_params
from tests.helpers.processes import env
from tests.helpers.project import copy_repo, git


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


def test_a_workspace_experiment_on_another_dataset_is_a_two_way_door(tmp_path):
    root = copy_repo(tmp_path / "project")
    first, second = (zip_dir(make_dataset(tmp_path / "src" / n, per_class=12), tmp_path / f"{n}.zip") for n in "ab")
    write_params(root / "params.yaml", tiny_params({"data": {"name": "first", "url": str(first)}}))
    git(root, "init", "-q")
    _dvc(root, "repro")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first dataset")
    before = _cached_outs(root)
    model = root / "data/first/models/finetune/model.keras"
    model_md5 = _file_md5(model)

    _dvc(root, "exp", "run", "--name", "other-data", "-S", "data.name=second", "-S", f"data.url={second}")
    assert (root / "data/second/models/finetune/model.keras").is_file()
    assert yaml.safe_load((root / "params.yaml").read_text())["data"]["name"] == "second"

    # The way back (README): params.yaml and dvc.lock from git, the outputs from DVC's cache.
    git(root, "restore", ".")
    _dvc(root, "checkout")
    assert _cached_outs(root) == before
    assert _file_md5(model) == model_md5
    status = json.loads(_dvc(root, "status", "--json"))
    assert set(status) <= {"source"}, status  # `source` is always_changed: it re-checks data.url on every repro
    ran = re.findall(r"^Running stage '([^']+)'", _dvc(root, "repro"), re.MULTILINE)
    assert ran == ["source"]  # nothing recomputed
    assert "other-data" in _dvc(root, "exp", "list", "--name-only")  # the other dataset's run is kept
