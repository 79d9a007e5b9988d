"""DVC in its own process, as the flows run it (`python -P flows/dvc_runner.py ...`, see dvc_commands.run_dvc):

    dvc_runner.py <dvc arguments>                  DVC's own command line, unchanged
    dvc_runner.py repro-stage [--pull] [--allow-missing] --result FILE STAGE

`repro-stage` reproduces one stage through DVC's Python API (`Repo.reproduce`, as `dvc repro --single-item`
does) and writes {"stage", "outcome"} to FILE. Either way the exit status is LOCKED when the command stopped on
DVC's LockError (the repo lock or a path's rwlock held by another DVC process): the caller waits and repeats it.
Its output (DVC's log, the stage's command) streams as `dvc`'s would. Only DVC and the standard library are
imported: the file runs by path, with nothing of the project on sys.path."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCKED = 75  # sysexits' EX_TEMPFAIL; DVC's own CLI exits 255 for a LockError as for any other failure


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_lock_error(exc: BaseException | None) -> bool:
    """Whether a LockError stopped the command, also when DVC wrapped it (a stage's rwlock error is the cause of
    the ReproductionError that `Repo.reproduce` raises)."""
    from dvc.lock import LockError

    return any(isinstance(e, LockError) for e in _chain(exc))


class _LockSeen(logging.Handler):
    """DVC's CLI logs the exception it stopped on (`logger.exception`); its type, not its text, says LOCKED."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen |= bool(record.exc_info) and is_lock_error(record.exc_info[1] if record.exc_info else None)


def outcome(reproduced: bool, restored: bool, fetched: bool) -> str:
    """reproduced: `Repo.reproduce` returned the stage (it ran, or its outputs came from the run-cache: both
    rewrite its dvc.lock entry); restored: DVC's run-cache restored it; fetched: not reproduced, yet outputs that
    were missing are there now (`--pull` took them from the DVC remote). Else DVC found it unchanged."""
    if reproduced:
        return "restored" if restored else "ran"
    return "pulled" if fetched else "skipped"


def _observed_cache(repo: Any) -> set[str]:
    """repo's run-cache, made to record each stage it restores: `restore` returns for a stage whose outputs it
    checked out and raises RunCacheNotFoundError otherwise. Returns the set it fills."""
    from dvc.stage.cache import StageCache

    restored: set[str] = set()

    class Observed(StageCache):
        def restore(self, stage: Any, *args: Any, **kwargs: Any) -> None:
            super().restore(stage, *args, **kwargs)
            restored.add(stage.addressing)

    repo.stage_cache = Observed(repo)
    return restored


def repro_stage(target: str, pull: bool, allow_missing: bool) -> str:
    """`dvc repro --single-item [--pull] [--allow-missing] <target>` in the working directory; its outcome."""
    from dvc.repo import Repo

    with Repo() as repo:
        restored = _observed_cache(repo)
        (stage,) = repo.stage.collect(target)
        missing = [out for out in stage.outs if not out.exists]
        done = repo.reproduce(target, single_item=True, pull=pull, allow_missing=allow_missing)
        fetched = any(out.exists for out in missing)
        return outcome(bool(done), stage.addressing in restored, fetched)


def main(argv: list[str]) -> int:
    if argv[:1] != ["repro-stage"]:
        from dvc.cli import main as dvc_main

        seen = _LockSeen()
        logging.getLogger("dvc").addHandler(seen)
        rc = dvc_main(argv)
        return LOCKED if rc and seen.seen else rc
    ap = argparse.ArgumentParser(prog="repro-stage")
    ap.add_argument("--pull", action="store_true")
    ap.add_argument("--allow-missing", action="store_true")
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("stage")
    args = ap.parse_args(argv[1:])
    try:
        found = repro_stage(args.stage, args.pull, args.allow_missing)
    except Exception as exc:  # as DVC's CLI reports it: "ERROR: ..." with the causes
        logging.getLogger("dvc").exception("")
        return LOCKED if is_lock_error(exc) else 1
    args.result.write_text(json.dumps({"stage": args.stage, "outcome": found}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
