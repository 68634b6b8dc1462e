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
may have been the machine's).
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

#: the user attribute of a skipped repeat: the number of the trial that trained its setting
REPEAT_ATTR = "repeat_of"


def is_skipped_repeat(trial: Any) -> bool:
    """Whether a (frozen) trial is a repeat recorded untrained (PRUNED with :data:`REPEAT_ATTR`)."""
    return trial.state == TrialState.PRUNED and REPEAT_ATTR in trial.user_attrs


def twin_of(params: dict[str, Any], number: int, complete: list[FrozenTrial], running: list[FrozenTrial]) -> int | None:
    """The trial that trained ``params`` to the end (``complete``) or is training them now
    (``running``: the live running trials), other than trial ``number``; the earliest such trial,
    None when there is none. Parameters compare exactly, as Optuna stores them."""
    twins = [t.number for t in (*complete, *running) if t.number != number and t.params == params]
    return min(twins) if twins else None


def skip_repeat(study: optuna.Study, trial: optuna.Trial, twin: int) -> None:
    """Record ``trial`` as a repeat of trial ``twin``: PRUNED untrained, with the reason."""
    trial.set_user_attr(REPEAT_ATTR, int(twin))
    trial.set_user_attr("pruned_reason", f"repeat of trial {twin}: its setting was trained already (search.repeats: skip)")
    study.tell(trial, state=TrialState.PRUNED)


class SpentSpace(str):
    """Why a run ended on repeats: the sampler asks only for settings trained already. An end,
    not a failure: as a grid without points left, the search exits 0 and says so."""


def spent_reason(in_a_row: int) -> SpentSpace:
    """Why a run ended on repeats (``search.max_repeats_in_a_row``)."""
    return SpentSpace(f"the sampler asked for {in_a_row} settings in a row that were trained already "
            "(search.max_repeats_in_a_row): the space looks spent")
