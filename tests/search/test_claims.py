"""Claims of trials in a shared storage: two drivers never run more than ``n_trials`` together,
and reruns of interrupted trials come before every other queued point. Each driver here is its
own ``prepare_study`` handle on one sqlite storage, as two ``search`` commands are."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from _support.claims import race_at_ask
from svite_search.search import prepare_study, spec_from_dict
from svite_search.search.study import RETRY_ATTR, ClaimLock, claim_is_surplus, claim_trial, give_back, queue_again

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def _two_drivers(tmp_path: Path, spec: Any) -> tuple[Any, Any]:
    return prepare_study(spec, tmp_path / "study"), prepare_study(spec, tmp_path / "study")


def test_a_claim_past_n_trials_is_given_back_and_taken_again_when_a_place_frees(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 2, "seed": 0}))
    a, b = _two_drivers(tmp_path, spec)
    first, second = a.study.ask(), b.study.ask()
    assert not claim_is_surplus(a.study, first.number, 2)
    assert not claim_is_surplus(b.study, second.number, 2)
    late = a.study.ask()
    assert claim_is_surplus(a.study, late.number, 2)
    give_back(a.study, a.storage, late.number)
    assert a.study.get_trials(deepcopy=False)[late.number].state == TrialState.WAITING
    b.study.tell(second, state=TrialState.FAIL)  # a place frees: the given-back claim is the next one
    again = a.study.ask()
    assert again.number == late.number and not claim_is_surplus(a.study, again.number, 2)


def test_a_queued_point_taken_after_a_newer_trial_started_counts_that_trial(tmp_path: Path, tiny_spec: Any) -> None:
    # Ordering by number alone would let the older point (number 0) ignore trial 1, which
    # started first, and both would run for n_trials 1.
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1, "seed": 0,
                                            "enqueue": [{"method": "svite"}]}))
    a, b = _two_drivers(tmp_path, spec)
    point = a.study.ask()
    newer = a.study.ask()
    assert (point.number, newer.number) == (0, 1)
    give_back(a.study, a.storage, point.number)  # point 0 queued again while trial 1 runs
    taken = b.study.ask()
    assert taken.number == 0
    assert claim_is_surplus(b.study, taken.number, 1)


def test_reruns_of_interrupted_trials_come_before_other_queued_points(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 3, "seed": 0,
                                            "enqueue": [{"method": "svite"}, {"method": "s2vite"}]}))
    handle = prepare_study(spec, tmp_path / "study")
    study = handle.study
    stopped = study.ask()  # the first enqueued point, then interrupted
    study.tell(stopped, state=TrialState.FAIL)
    queue_again(study, stopped.number, {"method": "svite"})
    rerun = study.ask()
    assert rerun.user_attrs.get(RETRY_ATTR) == stopped.number
    assert study.ask().number == 1  # then the second enqueued point


def test_two_drivers_counting_together_create_one_trial_for_the_last_place(tmp_path: Path, tiny_spec: Any) -> None:
    # Without the lock the second driver's trial is created, found surplus and given back:
    # a WAITING trial stays in the finished study (Optuna cannot delete a trial).
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1, "seed": 0}))
    a, b = _two_drivers(tmp_path, spec)
    assert ClaimLock(a.url, spec.name).kind == "directory"
    (mine, theirs), waited = race_at_ask(a, b, 1)
    assert waited.is_set(), "the second driver did not wait for the first one's claim"
    assert mine is not None and theirs is None
    trials = a.study.get_trials(deepcopy=False)
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.RUNNING)]


def test_a_claim_lock_is_released_with_the_block_and_on_an_error(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1, "seed": 0}))
    a, b = _two_drivers(tmp_path, spec)
    first, second = ClaimLock(a.url, spec.name), ClaimLock(b.url, spec.name, on_wait=lambda: pytest.fail("waited"))
    with pytest.raises(RuntimeError):
        with first.held() as held:
            assert held
            raise RuntimeError("a claim that failed")
    with second.held() as held:
        assert held


def test_a_claim_lock_that_cannot_be_taken_lets_the_claim_go_ahead_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = ClaimLock(f"sqlite:///{tmp_path / 'gone' / 'optuna.db'}", "s")  # its folder does not exist
    assert lock.kind == "directory"
    with caplog.at_level("WARNING"):
        with lock.held() as held:
            assert held is False
    assert "claim lock cannot be taken" in caplog.text


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_lock_error_leaks_no_descriptor_and_a_failed_release_does_not_undo_the_claim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import errno
    import fcntl

    from svite_search.search.study import _claims

    real_flock = fcntl.flock
    lock = ClaimLock(f"sqlite:///{tmp_path / 'optuna.db'}", "s")
    before = _open_fds()

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(_claims.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING"):
        for _ in range(20):
            with lock.held() as held:
                assert held is False
    assert _open_fds() == before, "a descriptor leaked per failed attempt"
    assert caplog.text.count("cannot be taken") == 1  # warned once per lock, not per claim

    def unlock_fails(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_UN:
            raise OSError(errno.EIO, "input/output error")
        real_flock(fd, operation)

    monkeypatch.setattr(_claims.fcntl, "flock", unlock_fails)
    with lock.held() as held:  # the block's claim stands: a release error is logged, not raised
        assert held is True
    assert _open_fds() == before
