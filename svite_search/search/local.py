"""The local executor: trials run one after another in this process (ask, train, tell).

With ``search.early_stopping`` the driver judges a trial after each epoch that is one of its
rungs (:mod:`.early_stopping.engine`, records in the study storage); a stop ends the trial as
PRUNED with the rung and the rule's verdict as its reason. With ``promote: true`` the driver
first queues the next waiting trial that now ranks in its rung's top (:mod:`.early_stopping.promotion`),
under the claim lock, so the ask takes it; once the sampler is spent (``search.repeats: skip``),
the best waiting trial goes on past its rung's top instead, until none waits.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import optuna

from .early_stopping.engine import RungEngine
from .early_stopping.promotion import queue_promotion
from .objective import FAIL, TrialOutcome, run_trial
from .monitor import SearchMonitor
from .space import suggest_params
from .stop import InfrastructureStop, interrupted_reason
from .study import (
    DRIVER_ATTR,
    ClaimLock,
    INTERRUPTED,
    RETRY_ATTR,
    RepeatGuard,
    StudyHandle,
    ask_claimed,
    driver_id,
    live_running,
    queue_again,
    record_outcome,
    recover_interrupted,
    study_counts,
)

log = logging.getLogger(__name__)


def _rung_reporter(engine: RungEngine, trial: optuna.Trial, trial_id: int, params: dict[str, Any]) -> Any:
    """The per-epoch callback that judges the trial at its rungs; a stop raises TrialPruned."""
    history: list[float] = []

    def report(metrics: dict[str, Any]) -> None:
        history.append(metrics.get("top1"))
        verdict = engine.judge(trial.number, trial_id, int(metrics.get("epoch", 0)), params, metrics, history)
        if not verdict.go_on:
            raise optuna.TrialPruned(verdict.reason)

    return report


#: seconds between looks at the study while other drivers finish its last trials
WAIT_FOR_OTHERS_S = 2.0


def _running_elsewhere(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials another live driver is running now (see :func:`.study.live_running`)."""
    me = driver_id()
    return sum(1 for t in live_running(study, trials) if t.user_attrs.get(DRIVER_ATTR) != me)


def run_local(handle: StudyHandle, monitor: SearchMonitor) -> str | None:
    """Run trials until the study (all its drivers together) has ``n_trials`` finished trials,
    ``max_failures`` failed in this run, ``max_repeats_in_a_row`` repeats were skipped in a row
    (``search.repeats: skip``), or (grid) the grid is exhausted.

    Returns why it stopped short of ``n_trials`` (None when it did not). An infrastructure error
    raises :class:`.stop.InfrastructureStop` and a signal :class:`.stop.SearchInterrupted`; the
    trial they stopped is failed with the reason and queued again first."""
    spec, study = handle.spec, handle.study
    engine = RungEngine.for_study(spec, handle.storage) if spec.search.early_stopping.kind != "none" else None
    storage, claims = handle.storage, ClaimLock(handle.url, study.study_name)
    study_id = storage.get_study_id_from_name(study.study_name)
    failures, repeats = 0, RepeatGuard(spec.search)
    while True:
        wait_for_others = False
        with claims.held():  # the count that decides and the ask, as one step among the study's drivers
            trials = study.get_trials(deepcopy=False)  # one read of the study per trial, for all that follows
            counts = study_counts(study, trials)
            if counts.finished >= spec.n_trials:
                return None
            if counts.running and recover_interrupted(study, storage):
                # a driver sharing this study died mid-trial: its trial was failed and queued again
                # (to rerun here); look at the study as it is now
                continue
            if counts.finished + _running_elsewhere(study, trials) >= spec.n_trials:
                # Another live driver's trials would finish the study: wait for them rather than
                # overshoot n_trials; run more only if one of them fails.
                recover_interrupted(study, storage)
                wait_for_others, trial = True, None
            else:
                if failures >= spec.max_failures:
                    reason = f"{failures} trials failed in this run (search.max_failures {spec.max_failures})"
                    log.warning("stopping: %s", reason)
                    return reason
                spent = repeats.spent is not None  # promote only: the search goes on by promotions alone
                promoted = engine is not None and queue_promotion(study, engine, trials, past_quota=spent) is not None
                if spent and not promoted:
                    return repeats.spent
                if spec.search.sampler == "grid" and counts.waiting == 0 and not promoted:
                    return None
                trial = ask_claimed(study, storage, spec.n_trials)
        if trial is None:
            if wait_for_others:
                time.sleep(WAIT_FOR_OTHERS_S)  # outside the lock: the other drivers claim meanwhile
            continue  # (or the claim was surplus after all: another driver's trial took the place)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        params: dict[str, Any] = {}
        try:
            params = suggest_params(trial, spec)
            if repeats.skipped(study, trial, trials):  # the study as read before the ask
                if repeats.spent is not None and not spec.search.early_stopping.promote:
                    return repeats.spent
                continue  # (promote: the waiting trials go on past their quota, see queue_promotion)
            monitor.started(trial.number, params, trial_id)
            reporter = _rung_reporter(engine, trial, trial_id, params) if engine is not None else None

            def on_epoch(metrics: dict[str, Any], number: int = trial.number) -> None:
                monitor.epoch(number, metrics)
                if reporter is not None:
                    reporter(metrics)

            outcome = run_trial(spec, handle.study_dir, trial.number, params, on_epoch=on_epoch,
                                retry_of=trial.user_attrs.get(RETRY_ATTR))
            if outcome.stop is None:
                record_outcome(study, trial, outcome, spec)
                monitor.finished(outcome)
        except BaseException as err:  # Ctrl-C, SIGTERM: the trial is lost, its parameters are queued again
            signal_name = getattr(err, "signal_name", None)
            stopped = TrialOutcome(trial.number, FAIL, error=interrupted_reason(signal_name) if signal_name else INTERRUPTED)
            if _fail_and_requeue(study, storage, trial_id, trial, stopped, spec, params):
                monitor.finished(stopped)
            raise
        if outcome.stop is not None:
            if _fail_and_requeue(study, storage, trial_id, trial, outcome, spec, params):
                monitor.finished(outcome)
            raise InfrastructureStop(outcome.stop)
        if outcome.state == FAIL:
            failures += 1


def _fail_and_requeue(study: optuna.Study, storage: optuna.storages.BaseStorage, trial_id: int,
                      trial: optuna.Trial, outcome: TrialOutcome, spec: Any, params: dict[str, Any]) -> bool:
    """Record a trial the search stopped as FAIL with the reason and queue its point again
    (the whole point: an enqueued trial's fixed parameters included). False when the trial
    was recorded already (the stop came while it was being told)."""
    frozen = storage.get_trial(trial_id)
    if frozen.state != optuna.trial.TrialState.RUNNING:
        return False
    record_outcome(study, trial, outcome, spec)
    queue_again(study, trial.number, {**(frozen.system_attrs.get("fixed_params") or {}), **frozen.params, **params})
    return True
