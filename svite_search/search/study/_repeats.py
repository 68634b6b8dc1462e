"""Repeated settings (``search.repeats: skip``): a trial asked for a setting the study has
trained to the end, or is training now, is recorded PRUNED untrained instead of training it again.

Why: training is seeded by the spec, so a repeat trains the same curve again and adds nothing
to the front, and samplers on a space of categorical and stepped values ask for spent settings
often (on the quickstart grid TPE spends 42 % of a study's trial-epochs on repeats; see the
search benchmark). Why PRUNED and not FAIL: Optuna's samplers read a pruned trial (TPE puts a
multi-objective study's pruned trials in its worse group, so a skip steers it away from what
it has spent), while a failed one is ignored and asked for again.

A skipped repeat carries :data:`REPEAT_ATTR` (the twin's number), so everything that counts
trials tells it from a trial stopped at a rung (:func:`is_skipped_repeat`): it does not count
towards ``n_trials``, spends no trial-epochs, and has no MLflow run. A setting stopped at a rung
or failed is not a twin: asked again, it trains (it may land on an unjudged slot, or its failure
may have been the machine's); one waiting at a rung under ``search.early_stopping.promote`` is a
twin (it goes on by promotion, from its checkpoint).
"""
from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..spec import SearchSettings
from ._drivers import REPEAT_ATTR, RETRY_ATTR, is_skipped_repeat
from ._recovery import live_running

log = logging.getLogger(__name__)

__all__ = ["REPEAT_ATTR", "RepeatGuard", "SpentSpace", "is_skipped_repeat", "is_waiting_at_rung", "twin_of"]


class SpentSpace(str):
    """Why a run ended on repeats: the sampler asks only for settings trained already. An end,
    not a failure: as a grid without points left, the search exits 0 and says so."""


def twin_of(study: optuna.Study, trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> int | None:
    """The trial that trained ``trial``'s setting to the end (COMPLETE) or trains it now (a live
    running trial, any driver's), other than ``trial``; the earliest such trial, None when there is
    none. ``trials``: the study as just read (read here when not given). Parameters compare
    exactly, as Optuna stores them."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    holders = ([t for t in trials if t.state == TrialState.COMPLETE or is_waiting_at_rung(t)]
               + live_running(study, trials))
    own = _earlier_attempts(trial, trials)  # a rerun or a promotion continues these: not twins
    twins = [t.number for t in holders if t.number != trial.number and t.number not in own and t.params == trial.params]
    return min(twins) if twins else None


def _earlier_attempts(trial: optuna.Trial | FrozenTrial, trials: list[FrozenTrial]) -> set[int]:
    """The trials ``trial`` continues (following ``retry_of``: reruns and promotions)."""
    by_number = {t.number: t for t in trials}
    seen: set[int] = set()
    previous = trial.user_attrs.get(RETRY_ATTR)
    while previous is not None and int(previous) not in seen:
        seen.add(int(previous))
        earlier = by_number.get(int(previous))
        previous = earlier.user_attrs.get(RETRY_ATTR) if earlier is not None else None
    return seen


def is_waiting_at_rung(trial: FrozenTrial, rung: int | None = None) -> bool:
    """A trial stopped by ``search.early_stopping.promote``, waiting at a rung (``rung``, or any)
    to resume from its checkpoint (PRUNED, its rung record marked ``waits``): its setting is not
    spent, but promotion, not a new trial from scratch, is how it goes on, so under ``skip`` it
    is a twin too."""
    keys = [f"rung_{int(rung)}"] if rung is not None else [k for k in trial.user_attrs if k.startswith("rung_")]
    return trial.state == TrialState.PRUNED and any(
        isinstance(trial.user_attrs.get(k), dict) and trial.user_attrs[k].get("waits") for k in keys)


class RepeatGuard:
    """One run's ``search.repeats``: under ``skip``, :meth:`skipped` records a repeat PRUNED
    untrained and counts the skips in a row; :attr:`spent` says why the run ends once they reach
    ``max_repeats_in_a_row``. Under ``train`` it skips nothing. Both executors ask it the same."""

    def __init__(self, settings: SearchSettings) -> None:
        self.enabled = settings.repeats == "skip"
        self.limit = int(settings.max_repeats_in_a_row)
        self.in_a_row = 0
        self.spent: SpentSpace | None = None

    def skipped(self, study: optuna.Study, trial: optuna.Trial, trials: list[FrozenTrial] | None = None) -> bool:
        """Whether ``trial`` (its parameters suggested) was a repeat, now recorded PRUNED with
        :data:`REPEAT_ATTR` and the reason; the caller asks for another trial unless :attr:`spent`."""
        if not self.enabled:
            return False
        twin = twin_of(study, trial, trials)
        if twin is None:
            self.in_a_row = 0
            return False
        trial.set_user_attr(REPEAT_ATTR, int(twin))
        trial.set_user_attr("pruned_reason", f"repeat of trial {twin}: its setting was trained already "
                            "(search.repeats: skip)")
        study.tell(trial, state=TrialState.PRUNED)
        self.in_a_row += 1
        log.info("trial %d: a repeat of trial %d, skipped untrained", trial.number, twin)
        if self.in_a_row >= self.limit:
            self.spent = SpentSpace(f"the sampler asked for {self.in_a_row} settings in a row that were trained "
                                    "already (search.max_repeats_in_a_row): the space looks spent")
            log.warning("stopping: %s", self.spent)
        return True
