"""The local executor: trials run one after another in this process (ask, train, tell).

Single-objective studies with ``search.pruner`` stop unpromising trials early: every epoch's
objective is reported to Optuna, and the pruner's verdict ends the trial as PRUNED.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import optuna

from .objective import FAIL, TrialOutcome, run_trial
from .progress import SearchMonitor
from .space import suggest_params
from .study import (
    DRIVER_ATTR,
    INTERRUPTED,
    RETRY_ATTR,
    StudyHandle,
    driver_gone,
    driver_id,
    queue_again,
    record_outcome,
    study_counts,
)

log = logging.getLogger(__name__)


def _pruning_reporter(trial: optuna.Trial, metric: str) -> Any:
    def report(metrics: dict[str, Any]) -> None:
        value, epoch = metrics.get(metric), int(metrics.get("epoch", 0))
        if value is None:
            return
        trial.report(float(value), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric} {float(value):.4g})")

    return report


#: seconds between looks at the study while other drivers finish its last trials
WAIT_FOR_OTHERS_S = 2.0


def _running_elsewhere(study: optuna.Study) -> int:
    """Trials another driver is running now (its process alive, or on another machine)."""
    me = driver_id()
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if t.user_attrs.get(DRIVER_ATTR) not in (None, me) and not driver_gone(t.user_attrs.get(DRIVER_ATTR))
    )


def run_local(handle: StudyHandle, monitor: SearchMonitor) -> None:
    """Run trials until ``n_trials`` have finished, ``max_failures`` failed in this run, or (grid)
    the grid is exhausted."""
    spec, study = handle.spec, handle.study
    prune = spec.search.pruner != "none" and len(spec.objectives) == 1
    failures = 0
    while True:
        counts = study_counts(study)
        if counts.finished >= spec.n_trials:
            break
        if counts.finished + _running_elsewhere(study) >= spec.n_trials:
            # Another live driver's trials would finish the study: wait for them rather than
            # overshoot n_trials; run more only if one of them fails.
            optuna.storages.fail_stale_trials(study)
            time.sleep(WAIT_FOR_OTHERS_S)
            continue
        if failures >= spec.max_failures:
            log.warning("stopping: %d trials failed in this run (search.max_failures)", failures)
            break
        if spec.search.sampler == "grid" and counts.waiting == 0:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # heartbeats outside Study.optimize are ours
            trial = study.ask()
        trial.set_user_attr(DRIVER_ATTR, driver_id())
        params = suggest_params(trial, spec)
        monitor.started(trial.number, params, trial._trial_id)
        reporter = _pruning_reporter(trial, spec.metrics[0]) if prune else None

        def on_epoch(metrics: dict[str, Any], number: int = trial.number) -> None:
            monitor.epoch(number, metrics)
            if reporter is not None:
                reporter(metrics)

        try:
            outcome = run_trial(spec, handle.study_dir, trial.number, params, on_epoch=on_epoch,
                                retry_of=trial.user_attrs.get(RETRY_ATTR))
        except BaseException:  # Ctrl-C: the trial is lost, its parameters are queued again
            outcome = TrialOutcome(trial.number, FAIL, error=INTERRUPTED)
            record_outcome(study, trial, outcome, spec)
            queue_again(study, trial.number, params)
            monitor.finished(outcome)
            raise
        record_outcome(study, trial, outcome, spec)
        monitor.finished(outcome)
        if outcome.state == FAIL:
            failures += 1
