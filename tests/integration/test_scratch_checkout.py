"""The scratch clone an overrides run makes its DVC experiment in, on a tiny git + DVC project with real `git` and
`dvc`: it carries the workspace's uncommitted tracked changes, shares the DVC cache, is saved and pushed back as
an experiment the workspace lists, and is removed afterwards; what it cannot reproduce is refused."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import dvc.api
import pytest
import yaml

from flows.dvc_commands import DvcError, reproduce_stage, run_dvc
from flows.experiments import check_out, exp_env, head_commit, save_experiment, scratch_clone
from flows.overrides import write_overrides
from pipeline.config import load_params
from tests.helpers.project import git

LOG = logging.getLogger("test_scratch_checkout")
STAGES = {
    # `python` is the test's interpreter (run_dvc puts it first on PATH)
    "a": {
        "cmd": "python -c \"import yaml; print(yaml.safe_load(open('params.yaml'))['x'])\" > a.txt",
        "params": ["x"],
        "outs": ["a.txt"],
    },
    "b": {  # root.txt: the DVC_ROOT the stage command saw
        "cmd": "cat a.txt a.txt > b.txt && python -c \"import os; print(os.environ['DVC_ROOT'])\" > root.txt",
        "deps": ["a.txt"],
        "outs": ["b.txt", {"root.txt": {"cache": False}}],
    },
}


@pytest.fixture
def workspace(tmp_path) -> Path:
    """Stage a reads params.yaml's x, stage b reads a's output; both run once and are committed."""
    root = tmp_path / "ws"
    root.mkdir()
    git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}, sort_keys=False))
    (root / "params.yaml").write_text("x: 1  # the value stage a prints\ny: 1\n")
    run_dvc(["repro"], root, LOG)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first run")
    return root


def test_an_experiment_made_in_a_scratch_clone_reaches_the_workspace(workspace):
    root = workspace
    (root / "params.yaml").write_text("x: 1  # the value stage a prints\ny: 2\n")  # tracked, not committed
    (root / "notes.txt").write_text("untracked")
    before = {f: (root / f).read_bytes() for f in ("params.yaml", "dvc.lock", "a.txt", "b.txt")}
    with scratch_clone(root, "exp-1") as clone:
        assert clone.parent == root / ".dvc" / "tmp"
        assert load_params(clone / "params.yaml")["y"] == 2  # the uncommitted change came along
        assert not (clone / "notes.txt").exists()  # untracked files stay behind, as with `dvc exp run`
        check_out(clone, LOG, 60)
        write_overrides(clone / "params.yaml", {"x": 5})
        env = exp_env(root, clone, "exp-1")
        outcomes = {stage: reproduce_stage(stage, clone, LOG, env=env)[0] for stage in ("a", "b")}
        assert outcomes == {"a": "ran", "b": "ran"}
        save_experiment(clone, "exp-1", {s: {"outcome": o} for s, o in outcomes.items()}, str(root), LOG, 60)
    assert not clone.exists()
    assert {f: (root / f).read_bytes() for f in before} == before  # the workspace is untouched
    assert git(root, "status", "--porcelain", "--untracked-files=no") == "M params.yaml"
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "list", "--name-only"], cwd=root, capture_output=True, text=True
    )
    assert listed.stdout.split() == ["exp-1"]
    assert dvc.api.params_show(repo=str(root), rev="exp-1") == {"x": 5, "y": 2}
    assert dvc.api.read("b.txt", repo=str(root), rev="exp-1") == "5\n5\n"  # from the shared cache
    assert dvc.api.read("root.txt", repo=str(root), rev="exp-1") == f"{root}\n"  # DVC_ROOT: the workspace
    run_dvc(["exp", "apply", "exp-1"], root, LOG)  # the experiment into the workspace, outputs from the cache
    assert (root / "b.txt").read_text() == "5\n5\n"
    assert (root / "params.yaml").read_text() == "x: 5  # the value stage a prints\ny: 2\n"  # as `-S` writes it


def test_the_clone_is_removed_when_the_run_fails(workspace):
    with pytest.raises(DvcError, match="failed"), scratch_clone(workspace, "broken") as clone:
        (clone / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"a": {"cmd": "exit 3"}}}))
        run_dvc(["repro", "--single-item", "a"], clone, LOG)
    assert not clone.exists()
    assert list((workspace / ".dvc" / "tmp").glob("broken*")) == []


def test_what_a_clone_cannot_reproduce_is_refused(tmp_path, workspace):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    with pytest.raises(DvcError, match="at least one commit"):
        head_commit(fresh)
    (workspace / "sub").mkdir()
    with pytest.raises(DvcError, match="top of its git repository"), scratch_clone(workspace / "sub", "x"):
        pass
