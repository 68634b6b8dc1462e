"""The persistent Optuna study of a study directory: storage, samplers, resume bookkeeping.

The study directory's layout is :mod:`svite_search._study_dir`'s (its one owner). The package is
laid out by role: :mod:`._storage` (which storage, opened how), :mod:`._samplers` (sampler and
pruner), :mod:`._claims` (the next trial, under a lock), :mod:`._directory` (create or resume a study), :mod:`._recovery` (interrupted trials,
reruns, surplus claims), :mod:`._heartbeat`, :mod:`._drivers` (who runs a trial), :mod:`._repeats` (settings asked for again), :mod:`._optuna_private` (the two Optuna
internals it needs, behind a version check) and
:mod:`._results` (outcomes, counts, the Pareto front).

Resume rules. Running the same command again continues the study until ``n_trials`` trials
have finished (COMPLETE or PRUNED; failed trials and repeats skipped untrained do not count, and
failed ones are replaced). A trial left
RUNNING by a driver that died (killed, crashed, machine lost) is marked FAIL with the reason
and its parameters are queued again: on this host when its driver process is gone, elsewhere
when its heartbeat is older than the grace period; either way with the reason ``interrupted``,
and its rerun comes before every other queued point and continues from its checkpoint. A study
directory created from a different spec is refused unless ``force``.

Counting. Every driver counts the trials of the shared storage, never only its own: several
drivers (two commands on one directory, or machines sharing a database) reach ``n_trials``
finished trials together, and none overshoots it: each counts and asks for its next trial under
the study's claim lock (:func:`claim_trial`), with :func:`claim_is_surplus` as the safety net
where a storage has no lock.

Example::

    handle = prepare_study(spec, Path("runs/quickstart"))
    handle.study.best_trials
"""
from __future__ import annotations

from ..._study_dir import DB_FILE, SPEC_FILE, STUDY_FILE
from ._claims import CLAIM_WAIT_S, ClaimLock, ask_claimed, claim_trial
from ._directory import StudyHandle, prepare_study, spec_of
from ._drivers import (DRIVER_ATTR, GRACE_S, HEARTBEAT_S, INTERRUPTED, REASON_ATTR, RETRY_ATTR, SOURCE_ATTR,
                       driver_gone, driver_id)
from ._heartbeat import Heartbeat, heartbeats_on, record_beat
from ._optuna_private import TESTED_OPTUNA
from ._recovery import (claim_is_surplus, give_back, live_running, queue_again, recover_interrupted, requeue,
                        retries_first, trial_id_of)
from ._repeats import REPEAT_ATTR, RepeatGuard, SpentSpace, is_skipped_repeat, is_waiting_at_rung, twin_of
from ._results import (RESULT_ATTR, Counts, is_feasible, pareto_front, record_outcome, set_result_attrs,
                       study_counts, trial_attrs)
from ._samplers import TrialSeededSampler, make_pruner, make_sampler, sampler_factory, trial_seed
from ._storage import SCHEMA_ATTEMPTS, STORAGE_ENV, load_study, open_storage, storage_url

__all__ = [
    "CLAIM_WAIT_S", "ClaimLock", "Counts", "DB_FILE", "DRIVER_ATTR", "GRACE_S", "Heartbeat", "HEARTBEAT_S",
    "INTERRUPTED", "REASON_ATTR", "REPEAT_ATTR", "RESULT_ATTR", "RETRY_ATTR", "SCHEMA_ATTEMPTS", "SOURCE_ATTR", "SPEC_FILE",
    "STORAGE_ENV", "STUDY_FILE", "SpentSpace", "StudyHandle", "TESTED_OPTUNA", "TrialSeededSampler", "ask_claimed",
    "claim_is_surplus", "claim_trial", "driver_gone", "driver_id", "give_back", "heartbeats_on",
    "is_feasible", "is_skipped_repeat", "is_waiting_at_rung", "live_running", "load_study", "make_pruner", "make_sampler", "open_storage",
    "pareto_front", "prepare_study", "queue_again", "record_beat", "record_outcome", "recover_interrupted",
    "RepeatGuard", "requeue", "retries_first", "sampler_factory", "set_result_attrs", "spec_of", "storage_url",
    "study_counts", "trial_attrs", "trial_id_of", "trial_seed", "twin_of",
]
