"""How flows/dvc_runner.py turns what DVC's Python API returned into a stage's outcome, and tells a lock error
(the caller waits and repeats) from any other failure by the exception's type, through DVC's wrapping."""

import logging

from dvc.exceptions import ReproductionError
from dvc.lock import LockError

from flows.dvc_runner import _LockSeen, is_lock_error, outcome


def test_the_outcome_follows_what_dvc_did():
    assert outcome(reproduced=True, restored=False, fetched=False) == "ran"
    assert outcome(reproduced=True, restored=True, fetched=False) == "restored"
    assert outcome(reproduced=False, restored=False, fetched=True) == "pulled"
    assert outcome(reproduced=False, restored=False, fetched=False) == "skipped"


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def test_a_lock_error_is_found_through_the_error_dvc_wraps_it_in():
    rwlock = _raised(ReproductionError("failed to reproduce 'after'"), LockError("'a.txt' is busy"))
    assert is_lock_error(rwlock)
    assert is_lock_error(LockError("Unable to acquire lock"))
    assert not is_lock_error(_raised(ReproductionError("failed to reproduce 'a'"), RuntimeError("exit 3")))
    assert not is_lock_error(None)


def test_the_cli_path_sees_a_lock_error_in_what_dvc_logs():
    seen, log = _LockSeen(), logging.getLogger("test_dvc_runner")
    log.addHandler(seen)
    try:
        log.error("failed", exc_info=_raised(RuntimeError("exit 3")))
        log.error("no exception")
        assert not seen.seen
        log.error("", exc_info=_raised(ReproductionError("failed"), LockError("busy")))
        assert seen.seen
    finally:
        log.removeHandler(seen)
