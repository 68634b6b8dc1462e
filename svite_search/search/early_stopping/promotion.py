"""Promotion (``search.early_stopping.promote: true``): which waiting trial resumes next.

Under the promotion form of ASHA (:mod:`.rules`) a trial outside its rung's top ``n // η``
stops there as PRUNED, its rung record marked ``waits``, and its checkpoint stays in its run
directory. Before a driver asks the sampler for a new setting it calls :func:`queue_promotion`
(under the study's claim lock, so two drivers never promote the same trial): the best waiting
trial that now ranks in the top ``n // η`` of its rung, the highest rung first, is queued again
as a new trial with

* ``retry_of`` and ``promoted_from``: the waiting trial's number, so the new trial continues
  from that trial's checkpoint (as a rerun after a crash does) and is the same trial at the
  rungs (its lineage);
* the rung record that promotes it (``go_on`` true, ``promoted_from``), so the rung engine
  lets it past that rung and judges it at the next one against the trials recorded there.

The queued trial is taken before any other queued point (reruns come first), so the driver's
next ask returns it. Everything is read from the study storage: a driver that crashed after
queueing a promotion leaves it queued (WAITING) for the next run, and a waiting trial whose
promotion is queued, running or done is not picked again.

Once the sampler is spent (under ``search.repeats: skip`` it asked ``max_repeats_in_a_row``
settings in a row that were trained already), no new trial can come to fill a rung, so its
quota stops growing. The drivers then promote past the quota (``past_quota``): the best waiting
trial, the highest rung first, goes on wherever it ranks, until the study has ``n_trials`` or
no trial waits. The budget goes to the best candidates left instead of going unspent.

A promotion is a trial of its own: it counts towards ``n_trials`` and has its own MLflow run;
the report counts only the epochs it trained itself (``resumed_at``).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from optuna.trial import FrozenTrial

from ..study import RETRY_ATTR, SOURCE_ATTR, is_skipped_repeat, is_waiting_at_rung
from .engine import RungEngine, rung_key
from .rules import pick_promotion, rung_order

log = logging.getLogger(__name__)

#: the user attribute of a promoted trial: the number of the waiting trial it continues
PROMOTED_ATTR = "promoted_from"
PROMOTION_SOURCE = "promotion"


@dataclasses.dataclass(frozen=True)
class Promotion:
    """The waiting trial ``number`` (of ``lineage``) resumes past ``rung``, where it now has
    ``place`` (from 0) of the ``recorded`` trials, inside the top ``keep`` (or past it:
    ``past_quota``, the sampler being spent)."""

    number: int
    lineage: int
    rung: int
    values: list[float]
    place: int
    recorded: int
    keep: int
    past_quota: bool = False

    @property
    def reason(self) -> str:
        if self.past_quota:
            return (f"promoted at rung {self.rung}: place {self.place + 1} of {self.recorded}, past the top "
                    f"{self.keep}: the sampler is spent, the best waiting trial goes on")
        return (f"promoted at rung {self.rung}: now place {self.place + 1} of {self.recorded}, in the top "
                f"{self.keep}")


def _latest_attempts(engine: RungEngine, trials: Sequence[FrozenTrial]) -> dict[int, FrozenTrial]:
    """Each lineage's latest attempt (its highest trial number), skipped repeats left out."""
    by_number = {t.number: t for t in trials}
    latest: dict[int, FrozenTrial] = {}
    for trial in trials:
        if is_skipped_repeat(trial):
            continue
        lineage = engine.lineage_of(trial.number, by_number)
        if lineage not in latest or trial.number > latest[lineage].number:
            latest[lineage] = trial
    return latest


def next_promotion(engine: RungEngine, trials: Sequence[FrozenTrial], *, past_quota: bool = False) -> Promotion | None:
    """The waiting trial to resume now (see the module docstring), None when no waiting trial
    ranks in its rung's top ``n // η``. ``past_quota`` (the sampler is spent): when none does,
    the best waiting trial wherever it ranks, the highest rung first; None when no trial waits."""
    settings = engine.settings
    if settings.kind == "none" or not settings.promote:
        return None
    trials = list(trials)
    latest = _latest_attempts(engine, trials)
    rungs = sorted({int(record["epoch"]) for t in trials for key, record in t.user_attrs.items()
                    if key.startswith("rung_") and isinstance(record, dict) and "epoch" in record}, reverse=True)
    by_rung = []  # (epoch, lineages, points, waiting), the highest rung first
    for rung in rungs:
        at_rung = engine.records(rung, trials)  # lineage -> (number, record)
        lineages = sorted(at_rung)  # the order the lineages began: ties go to the earlier
        points = [list(at_rung[lin][1]["values"]) for lin in lineages]
        by_rung.append((rung, lineages, points,
                        [lin in latest and is_waiting_at_rung(latest[lin], rung) for lin in lineages]))
    pick = pick_promotion(settings.kind, [(rung, points, waiting) for rung, _, points, waiting in by_rung],
                          engine.directions, settings.reduction_factor, past_quota=past_quota)
    if pick is None:
        return None
    rung, index, past = pick
    _, lineages, points, _ = next(entry for entry in by_rung if entry[0] == rung)
    lineage = lineages[index]
    return Promotion(number=latest[lineage].number, lineage=lineage, rung=rung, values=points[index],
                     place=rung_order(settings.kind, points, engine.directions).index(index), recorded=len(points),
                     keep=len(points) // int(settings.reduction_factor), past_quota=past)


def queue_promotion(study: Any, engine: RungEngine, trials: Sequence[FrozenTrial] | None = None, *,
                    past_quota: bool = False) -> Promotion | None:
    """Queue the next promotion (:func:`next_promotion`, ``past_quota`` as there) as a trial that
    reruns the waiting one from its checkpoint; returns it, or None. Call it under the study's
    claim lock, just before asking for a trial: the ask then takes it (reruns come first)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    trials = list(trials)
    promotion = next_promotion(engine, trials, past_quota=past_quota)
    if promotion is None:
        return None
    waiting = next(t for t in trials if t.number == promotion.number)
    earlier = waiting.user_attrs[rung_key(promotion.rung)]
    record = {**earlier, "go_on": True, "waits": False, "reason": promotion.reason,
              "promoted_from": promotion.number}
    params = {**(waiting.system_attrs.get("fixed_params") or {}), **waiting.params}
    study.enqueue_trial(params, user_attrs={RETRY_ATTR: promotion.number, SOURCE_ATTR: PROMOTION_SOURCE,
                                            PROMOTED_ATTR: promotion.number, rung_key(promotion.rung): record})
    log.info("trial %d resumes from its checkpoint: %s", promotion.number, promotion.reason)
    return promotion
