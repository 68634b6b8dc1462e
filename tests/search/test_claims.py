"""Claims of trials in a shared storage: two drivers never run more than ``n_trials`` together,
and reruns of interrupted trials come before every other queued point. Each driver here is its
own ``prepare_study`` handle on one sqlite storage, as two ``search`` commands are."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from svite_search.search import prepare_study, spec_from_dict
from svite_search.search.study import RETRY_ATTR, claim_is_surplus, give_back, queue_again

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


def _two_drivers(tmp_path: Path, spec: Any) -> tuple[Any, Any]:
    return prepare_study(spec, tmp_path / "study"), prepare_study(spec, tmp_path / "study")


def test_a_claim_past_n_trials_is_given_back_and_taken_again_when_a_place_frees(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 2, "seed": 0}))
    a, b = _two_drivers(tmp_path, spec)
    first, second = a.study.ask(), b.study.ask()
    assert not claim_is_surplus(a.study, first._trial_id, 2)
    assert not claim_is_surplus(b.study, second._trial_id, 2)
    late = a.study.ask()
    assert claim_is_surplus(a.study, late._trial_id, 2)
    give_back(a.study, late._trial_id)
    assert a.study._storage.get_trial(late._trial_id).state == TrialState.WAITING
    b.study.tell(second, state=TrialState.FAIL)  # a place frees: the given-back claim is the next one
    again = a.study.ask()
    assert again.number == late.number and not claim_is_surplus(a.study, again._trial_id, 2)


def test_a_queued_point_taken_after_a_newer_trial_started_counts_that_trial(tmp_path: Path, tiny_spec: Any) -> None:
    # Ordering by number alone would let the older point (number 0) ignore trial 1, which
    # started first, and both would run for n_trials 1.
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1, "seed": 0,
                                            "enqueue": [{"method": "svite"}]}))
    a, b = _two_drivers(tmp_path, spec)
    point = a.study.ask()
    newer = a.study.ask()
    assert (point.number, newer.number) == (0, 1)
    give_back(a.study, point._trial_id)  # point 0 queued again while trial 1 runs
    taken = b.study.ask()
    assert taken.number == 0
    assert claim_is_surplus(b.study, taken._trial_id, 1)


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
