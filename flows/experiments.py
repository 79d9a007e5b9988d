"""DVC experiments the flows make stage by stage: a scratch clone of the workspace's git repo at HEAD (plus the
workspace's uncommitted changes to tracked files, as `dvc exp run` takes them) on the workspace's DVC cache, its
stages run one Prefect task each, the result saved with `dvc exp save` and pushed back to the git repo it came
from with `dvc exp push`, so `dvc exp show` lists it there and `dvc exp apply` brings it in."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flows.dvc_commands import DvcError, run_dvc

# Outcomes after which a stage's dvc.lock entry may be new: `dvc exp save` re-commits only those stages (a
# stage that was skipped or only checked may have no outputs in the checkout to hash).
CHANGED = ("ran", "restored")


def git_out(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise DvcError(f"`git {' '.join(args)}` failed in {root}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def head_commit(root: Path) -> str:
    """The commit a DVC experiment of `root` starts from; none yet is refused with one line."""
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise DvcError(
            f"parameter overrides run as DVC experiments, which start from the last git commit: "
            f"make {root} a git repository with at least one commit"
        )
    return done.stdout.strip()


def _identity(root: Path, clone: Path) -> None:
    """The workspace's git identity (its local config is not cloned): `dvc exp save` commits."""
    for key in ("user.name", "user.email"):
        value = subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True).stdout.strip()
        if value:
            git_out(clone, "config", key, value)


@contextlib.contextmanager
def scratch_clone(root: Path, name: str) -> Iterator[Path]:
    """A clone of `root` at HEAD under its .dvc/tmp/ (DVC and git ignore it there; the cache's filesystem),
    with the workspace's uncommitted changes to tracked files (staged or not; untracked files stay behind) and
    `root`'s DVC cache as its own, so nothing is copied or recomputed twice. Removed afterwards, also on failure."""
    from dvc.repo import Repo

    head = head_commit(root)
    if Path(git_out(root, "rev-parse", "--show-toplevel").strip()).resolve() != root:
        raise DvcError(f"parameter overrides need the DVC project at the top of its git repository, not {root}")
    with Repo(str(root)) as repo:
        cache, tmp = repo.cache.local_cache_dir, Path(repo.tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    clone = Path(tempfile.mkdtemp(prefix=f"exp-{name}-", dir=tmp))
    try:
        git_out(root, "clone", "-q", "--no-checkout", str(root), str(clone))
        git_out(clone, "checkout", "-q", "--detach", head)
        patch = subprocess.run(["git", "diff", "--binary", "HEAD"], cwd=root, capture_output=True, check=True).stdout
        if patch:
            done = subprocess.run(["git", "apply", "--index"], cwd=clone, input=patch, capture_output=True)
            if done.returncode != 0:
                raise DvcError(f"the uncommitted changes of {root} do not apply to a clone: {done.stderr.decode()}")
        _identity(root, clone)
        # Absolute, in the clone's own config.local: `dvc exp save` commits outputs to the workspace's cache.
        (clone / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")
        yield clone
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def exp_env(root: Path, clone: Path, name: str) -> dict[str, str]:
    """What `dvc exp run` sets for the stage commands: the real project as DVC_ROOT (the MLflow store and
    source found there, not in the clone that is removed), the experiment's name and baseline commit."""
    head = git_out(clone, "rev-parse", "HEAD").strip()
    return {"DVC_ROOT": str(root), "DVC_EXP_NAME": name, "DVC_EXP_BASELINE_REV": head}


def check_out(clone: Path, log: logging.Logger | logging.LoggerAdapter, lock_timeout_s: float) -> None:
    """The committed outputs from the cache into the clone, as `dvc exp run` does before its stages: unchanged
    stages are then skipped; what the cache lacks is left out (the stage runs or is restored)."""
    run_dvc(["checkout", "--force", "--allow-missing"], clone, log, lock_timeout_s)


def save_experiment(
    clone: Path,
    name: str,
    stages: dict[str, dict],
    remote: str,
    log: logging.Logger | logging.LoggerAdapter,
    lock_timeout_s: float,
) -> None:
    """`dvc exp save --name <name>` in the clone (params.yaml, dvc.lock, metrics and every file the stages wrote
    that git would see), then `dvc exp push --no-cache <remote> <name>`: the git refs only, the outputs are in the
    shared cache or were pushed to the DVC remote before."""
    targets = [stage for stage, r in stages.items() if r["outcome"] in CHANGED]
    untracked = git_out(clone, "ls-files", "--others", "--exclude-standard").splitlines()
    args = ["exp", "save", "--name", name, *(a for path in untracked for a in ("-I", path)), *targets]
    run_dvc(args, clone, log, lock_timeout_s)
    run_dvc(["exp", "push", "--no-cache", remote, name], clone, log, lock_timeout_s)
