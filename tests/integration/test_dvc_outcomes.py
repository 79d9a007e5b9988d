"""Each stage's outcome as DVC's Python API reports it (flows/dvc_runner.py), with real `dvc` on a tiny project:
ran, skipped when unchanged, restored from the run-cache, pulled from a DVC remote, skipped when only checked."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_commands import DvcError, reproduce_stage, run_dvc

LOG = logging.getLogger("test_dvc_outcomes")
STAGES = {
    "a": {
        "cmd": "python -c \"import yaml; print(yaml.safe_load(open('params.yaml'))['x'])\" > a.txt",
        "params": ["x"],
        "outs": ["a.txt"],
    },
    "b": {"cmd": "cat a.txt a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
}


@pytest.fixture
def project(tmp_path) -> Path:
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}))
    (tmp_path / "params.yaml").write_text("x: 1\n")
    return tmp_path


def _outcome(root: Path, stage: str, *pull: str) -> str:
    return reproduce_stage(stage, root, LOG, pull=list(pull))[0]


def test_a_stage_runs_then_is_skipped_then_is_restored_from_the_run_cache(project):
    assert [_outcome(project, s) for s in ("a", "b")] == ["ran", "ran"]
    assert [_outcome(project, s) for s in ("a", "b")] == ["skipped", "skipped"]
    (project / "params.yaml").write_text("x: 2\n")
    assert _outcome(project, "a") == "ran"
    (project / "params.yaml").write_text("x: 1\n")  # back to a run DVC's run-cache holds
    assert _outcome(project, "a") == "restored"
    assert (project / "a.txt").read_text() == "1\n"


def test_missing_outputs_are_pulled_from_the_remote_or_left_there(project, tmp_path_factory):
    remote = tmp_path_factory.mktemp("remote")
    run_dvc(["remote", "add", "-d", "shared", str(remote)], project, LOG)
    for stage in ("a", "b"):
        _outcome(project, stage)
    run_dvc(["push"], project, LOG)
    for name in ("a.txt", "b.txt"):
        (project / name).unlink()
    shutil.rmtree(project / ".dvc" / "cache")  # the outputs exist on the remote only
    assert _outcome(project, "a", "--pull", "--allow-missing") == "skipped"  # only checked: its data stays there
    assert not (project / "a.txt").exists()
    assert _outcome(project, "b", "--pull") == "pulled"
    assert (project / "b.txt").read_text() == "1\n1\n"


def test_a_failing_stage_is_an_error_not_an_outcome(project):
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"a": {"cmd": "exit 3", "outs": ["a.txt"]}}}))
    with pytest.raises(DvcError, match="failed to reproduce 'a'"):
        _outcome(project, "a")
