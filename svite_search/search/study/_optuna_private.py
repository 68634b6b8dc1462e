"""The two Optuna internals the study package relies on, in one place, behind a version check.

Optuna has no public way to do either:

- **Choose which queued trial ``Study.ask()`` takes.** ``ask()`` takes the oldest WAITING
  trial (``Study._pop_waiting_trial_id``); reruns of interrupted trials must come before the
  grid points and baselines queued when the study began (:func:`._recovery.retries_first`).
- **Find a study's stale trials without failing them.** ``optuna.storages.fail_stale_trials``
  fails them first and reports them after, but a finished trial's attributes can no longer
  change, so the reason (``interrupted``) has to be written before (``_get_stale_trial_ids``,
  which ``fail_stale_trials`` itself calls).

Each is checked against the installed Optuna by ``tests/search/test_optuna_private.py``; on an
Optuna outside :data:`TESTED_OPTUNA` the harness warns once, and where an internal is gone it
falls back rather than fail the search: Optuna's own order of queued trials, and no stale trials
found (a lost trial is then recovered only by a driver on the machine that ran it).
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import optuna

from ._heartbeat import heartbeats_on

log = logging.getLogger(__name__)

#: the Optuna versions these internals were tested with: [low, high)
TESTED_OPTUNA = ((4, 0), (6, 0))
_warned: list[bool] = []


def optuna_version() -> tuple[int, int]:
    major, minor = (optuna.__version__.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def version_tested() -> bool:
    """Whether the installed Optuna lies in :data:`TESTED_OPTUNA` (warns once when it does not)."""
    low, high = TESTED_OPTUNA
    tested = low <= optuna_version() < high
    if not tested and not _warned:
        _warned.append(True)
        log.warning("Optuna %s is outside the versions svite-search was tested with (%d.%d to below %d.%d): "
                    "reruns of interrupted trials may not come first", optuna.__version__, *low, *high)
    return tested


def replace_waiting_trial_pop(study: optuna.Study, pop: Callable[[], int | None]) -> bool:
    """Make ``study.ask()`` take the queued trial ``pop`` claims (its storage trial id, or None
    for a new trial). False, and Optuna's order kept, where this Optuna has no such hook."""
    version_tested()
    if not callable(getattr(study, "_pop_waiting_trial_id", None)):
        return False
    study._pop_waiting_trial_id = pop  # type: ignore[method-assign]
    return True


def stale_trial_ids(storage: optuna.storages.BaseStorage, study_id: int) -> list[int]:
    """Storage ids of the study's RUNNING trials whose heartbeat is older than the grace
    period, without failing them; empty where heartbeats are off or this Optuna cannot tell."""
    if not heartbeats_on(storage):
        return []
    version_tested()
    find = getattr(storage, "_get_stale_trial_ids", None)
    if find is None:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(find(study_id))
