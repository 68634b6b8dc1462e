"""Resume bookkeeping: interrupted trials are failed with the reason and rerun first, and a
driver's claim that would overshoot ``n_trials`` is given back.

Why a rerun comes first: it continues from its checkpoint, so the study loses the least work;
why claims are counted against the shared storage: several drivers reach ``n_trials`` finished
trials together and none overshoots it (:func:`claim_is_surplus`).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._drivers import (DRIVER_ATTR, GRACE_S, INTERRUPTED, REASON_ATTR, RETRY_ATTR, SOURCE_ATTR, driver_gone,
                       is_skipped_repeat)
from ._optuna_private import replace_waiting_trial_pop, stale_trial_ids

log = logging.getLogger(__name__)


def study_id_of(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    return storage.get_study_id_from_name(study.study_name)


def trial_id_of(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage id of trial ``number`` (storage writes take it; Optuna keeps it private on trials)."""
    return storage.get_trial_id_from_study_id_trial_number(study_id_of(study, storage), number)


def retries_first(study: optuna.Study, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Make ``study.ask()`` take the reruns of interrupted trials before any other queued point
    (grid points, enqueued baselines), oldest first; the claim itself stays Optuna's atomic
    WAITING -> RUNNING transition, so two drivers never take the same point. Optuna has no
    public hook for this (see :mod:`._optuna_private`)."""
    study_id = study_id_of(study, storage)

    def pop_waiting_trial_id() -> int | None:
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in sorted(waiting, key=lambda t: (RETRY_ATTR not in t.user_attrs, t.number)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            try:
                if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    return trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    replace_waiting_trial_pop(study, pop_waiting_trial_id)
    return study


def queue_again(study: optuna.Study, number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's parameters again, remembering which trial it reruns."""
    if params:
        study.enqueue_trial(dict(params), user_attrs={RETRY_ATTR: number, SOURCE_ATTR: "retry"})


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """The storage's stale-trial callback: rerun a trial whose heartbeat stopped."""
    queue_again(study, trial.number, dict(trial.params))


def recover_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail with the reason ``interrupted`` and requeue the trials whose driver is gone (its
    process ended on this host, or its heartbeat stopped longer than the grace period ago);
    returns their numbers. The reason is set before the trial is failed: a finished trial's
    attributes can no longer change."""
    study_id = study_id_of(study, storage)
    stale = set(stale_trial_ids(storage, study_id))
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        gone = driver_gone(trial.user_attrs.get(DRIVER_ATTR))
        if not gone and not stale:
            continue  # a live driver's trial, and none is stale: no storage id to look up
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if trial_id not in stale and not gone:
            continue
        if trial.user_attrs.get(DRIVER_ATTR) is None and trial_id not in stale and _young(trial):
            continue  # asked a moment ago by a driver that has not signed it yet
        try:
            storage.set_trial_user_attr(trial_id, REASON_ATTR, INTERRUPTED)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by its (live) driver
        queue_again(study, trial.number, dict(trial.params))
        recovered.append(trial.number)
    if recovered:
        log.warning("trials %s were interrupted: marked failed and queued again", recovered)
    return recovered


def _young(trial: FrozenTrial) -> bool:
    start = trial.datetime_start
    return start is not None and (datetime.now() - start).total_seconds() < GRACE_S


def live_running(study: optuna.Study, trials: Iterable[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """RUNNING trials a live driver may still finish: its process is alive (this host), it runs
    elsewhere (its heartbeat decides), or it was asked a moment ago and is not signed yet."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    live = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        driver = t.user_attrs.get(DRIVER_ATTR)
        if (driver is None and _young(t)) or (driver is not None and not driver_gone(driver)):
            live.append(t)
    return live


def claim_is_surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """True when the trial just asked (RUNNING, trial ``number``) would take the study past
    ``n_trials``: the finished trials plus the live running trials ahead of it already make
    ``n_trials``. Ahead means an earlier number, or started no later (a requeued point popped
    after a newer trial started).

    Why this cannot overshoot: of two trials that run at once, the one whose RUNNING state was
    written second sees the other when it checks; it counts it unless the other has a higher
    number and started later, which the other, being written first, cannot have. So no two
    trials both skip each other, and at most ``n_trials`` finish. A driver whose claim is
    surplus gives it back (:func:`give_back`) and waits for the others."""
    trials = study.get_trials(deepcopy=False)
    mine = next((t for t in trials if t.number == number), None)
    if mine is None:
        return False
    finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_skipped_repeat(t))
    start = mine.datetime_start or datetime.max

    def ahead(other: FrozenTrial) -> bool:
        return other.number < mine.number or (other.datetime_start is not None and other.datetime_start <= start)

    others = [t for t in live_running(study, trials) if t.number != number and ahead(t)]
    return finished + len(others) >= n_trials


def give_back(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> None:
    """Return a surplus claim to the queue (RUNNING -> WAITING): an enqueued or grid point it
    popped stays queued, and a new trial waits there for a later run or a failed trial."""
    try:
        storage.set_trial_state_values(trial_id_of(study, storage, number), TrialState.WAITING)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
