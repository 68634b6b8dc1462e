"""The rung engine: judges a trial at its rungs and keeps every judgement in the study storage.

One engine serves both kinds (``asha``, ``pareto``) and both executors. Optuna's pruners raise
in multi-objective studies and Ray Tune's schedulers take one metric, so neither library's
early stopping can rank a rung on the accuracy–MACs trade-off; this engine applies
:func:`.rules.should_continue` and is driven by the local executor after each epoch and by the
Ray executor's scheduler (:mod:`._ray`) on each reported result.

Rung records. When trial ``n`` reaches rung ``r`` the engine reads the records of rung ``r``
from the storage (user attribute ``rung_<r>`` of every trial of the study), decides, and writes
the trial's own record before acting on it::

    {"epoch": 3, "values": [0.61, 0.0009], "metrics": ["top1", "gmacs"], "go_on": false,
     "reason": "pareto: dominated by ...", "against": [0, 2, 5], "lineage": 7}

``against`` names the trials it was compared with, so every decision can be replayed from the
records alone (:func:`replay`). ``lineage`` is the first attempt of the trial: a trial rerun after
a crash (its ``retry_of``) is the same trial at the rung, it adopts the record its earlier attempt
left instead of being judged again, and is never compared with itself. Because the records live in
the storage, a driver that crashed mid-rung and resumes (or a second driver on the same study)
judges later arrivals against the same trials the crashed driver had recorded.

A trial that runs to the end unjudged (every ``full_run_every``-th lineage, see
:func:`.rules.runs_unjudged`) gets a record too, ``go_on`` true with the reason ``unjudged: ...``:
its values are judged against nobody, and later arrivals are judged against them. Every record
keeps the ``full_run_every`` it was decided with, and a study keeps that value for its whole life
(:meth:`RungEngine.study_full_run_every`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

from ..spec import METRICS, RUNG_PROGRESS_METRICS, RUNG_STRUCTURE_METRICS, StudySpec
from .rules import default_min_epochs, rung_epochs, rung_verdict

log = logging.getLogger(__name__)

RUNG_ATTR = "rung_{epoch}"
RETRY_ATTR = "retry_of"  # the study's own name for "this trial reruns trial N"


def rung_key(epoch: int) -> str:
    return RUNG_ATTR.format(epoch=int(epoch))


def trial_epochs(spec: StudySpec, params: Mapping[str, Any]) -> int:
    """``train.epochs`` of a trial with ``params``."""
    from ...config import TrainConfig

    if "train.epochs" in params:
        return int(params["train.epochs"])
    epochs = (spec.base.get("train") or {}).get("epochs")
    return int(epochs) if epochs is not None else int(TrainConfig.__dataclass_fields__["epochs"].default)


def trial_min_epochs(spec: StudySpec, params: Mapping[str, Any] | None = None) -> int:
    """The first rung of a trial with ``params``: ``search.early_stopping.min_epochs`` where it is
    set, else the first epoch after the trial's ``train.warmup_epochs``
    (:func:`.rules.default_min_epochs`)."""
    from ...config import TrainConfig

    settings = spec.search.early_stopping
    if settings.min_epochs is not None:
        return int(settings.min_epochs)
    params = params or {}
    if "train.warmup_epochs" in params:
        warmup = params["train.warmup_epochs"]
    else:
        warmup = (spec.base.get("train") or {}).get("warmup_epochs")
        if warmup is None:
            warmup = TrainConfig.__dataclass_fields__["warmup_epochs"].default
    return default_min_epochs(int(warmup))


def trial_rungs(spec: StudySpec, epochs: int, params: Mapping[str, Any] | None = None) -> list[int]:
    """The rung epochs of a trial with ``params`` that trains ``epochs`` epochs (none without
    early stopping)."""
    settings = spec.search.early_stopping
    if settings.kind == "none":
        return []
    return rung_epochs(trial_min_epochs(spec, params), settings.reduction_factor, epochs)


def rung_objectives(spec: StudySpec) -> tuple[list[str], list[str]]:
    """The objectives a rung is judged on and their directions: the study's first per-epoch
    objective first (``asha`` ranks by it alone), then every other objective known at a rung
    (per-epoch accuracy and loss, and what the model's structure fixes: MACs, parameters,
    density). Objectives measured after training only (``latency_ms``, ``wall_s``) are left out:
    a rung cannot know them."""
    progress = [o for o in spec.objectives if o.metric in RUNG_PROGRESS_METRICS]
    if not progress:  # the spec forbids it; a plain top-1 keeps the engine total
        progress_metric = [("top1", METRICS["top1"])]
    else:
        progress_metric = [(progress[0].metric, progress[0].direction)]
    rest = [(o.metric, o.direction) for o in spec.objectives
            if o.metric != progress_metric[0][0] and o.metric in RUNG_PROGRESS_METRICS + RUNG_STRUCTURE_METRICS]
    pairs = progress_metric + rest
    return [m for m, _ in pairs], [d for _, d in pairs]


def rung_value(metric: str, metrics: Mapping[str, Any], top1_history: Sequence[float]) -> float:
    """One objective's value at a rung: ``top1_best`` is the best top-1 so far, ``top1_final``
    the current top-1, the others as reported for the epoch (non-finite when missing)."""
    if metric == "top1_best":
        finite = [float(v) for v in top1_history if _finite(v)]
        return max(finite) if finite else math.nan
    key = "top1" if metric == "top1_final" else metric
    value = metrics.get(key)
    return float(value) if _finite(value) else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Verdict:
    go_on: bool
    reason: str
    epoch: int | None = None  # the rung that decided (None: no rung was reached)


class RungEngine:
    """Decides at the rungs of one study; every decision is read from and written to its storage.

    ``storage`` is the study's Optuna storage (``optuna.storages.BaseStorage``): records are
    written with its public ``set_trial_user_attr`` and read with ``get_all_trials``.
    """

    def __init__(self, spec: StudySpec, storage: Any, study_id: int) -> None:
        self.spec = spec
        self.storage, self.study_id = storage, study_id
        self.settings = spec.search.early_stopping
        self.metrics, self.directions = rung_objectives(spec)
        self._warned_full_run_every = False

    @classmethod
    def for_study(cls, spec: StudySpec, storage: Any) -> "RungEngine":
        return cls(spec, storage, storage.get_study_id_from_name(spec.name))

    # ------------------------------------------------------------------ reading the records

    def _trials(self) -> list[Any]:
        return list(self.storage.get_all_trials(self.study_id, deepcopy=False))

    @staticmethod
    def lineage_of(number: int, by_number: Mapping[int, Any]) -> int:
        """The first attempt of trial ``number`` (following ``retry_of``)."""
        seen = set()
        while number not in seen:
            seen.add(number)
            trial = by_number.get(number)
            previous = trial.user_attrs.get(RETRY_ATTR) if trial is not None else None
            if previous is None:
                return number
            number = int(previous)
        return number

    def records(self, epoch: int, trials: Iterable[Any] | None = None) -> dict[int, tuple[int, dict[str, Any]]]:
        """Rung ``epoch``'s records by lineage: ``{lineage: (trial number, record)}`` (a
        lineage's latest attempt wins)."""
        key = rung_key(epoch)
        out: dict[int, tuple[int, dict[str, Any]]] = {}
        for trial in sorted(trials if trials is not None else self._trials(), key=lambda t: t.number):
            record = trial.user_attrs.get(key)
            if isinstance(record, dict):
                out[int(record.get("lineage", trial.number))] = (trial.number, record)
        return out

    def study_full_run_every(self, trials: Iterable[Any]) -> int:
        """The ``full_run_every`` this study's rungs are judged with: the value its first rung
        record was written with (a record from before the setting existed: 0, every trial
        judged), else the spec's. A study keeps one rule for its whole life: a study started
        before ``full_run_every`` existed, resumed by a release whose default is 4, would
        otherwise start letting trials through unjudged half-way. Every record of a study holds
        the same value, so any one of them tells."""
        first = next((record for trial in trials for key, record in trial.user_attrs.items()
                      if key.startswith("rung_") and isinstance(record, dict)), None)
        if first is None:
            return int(self.settings.full_run_every)
        value = int(first.get("full_run_every", 0))
        if value != int(self.settings.full_run_every) and not self._warned_full_run_every:
            self._warned_full_run_every = True
            log.warning("this study's rungs were judged with full_run_every %d; its later rungs are too (the spec "
                        "says %d)", value, self.settings.full_run_every)
        return value

    # ------------------------------------------------------------------ deciding

    def judge(self, number: int, trial_id: int, epoch: int, params: Mapping[str, Any],
              metrics: Mapping[str, Any], top1_history: Sequence[float]) -> Verdict:
        """Trial ``number`` (storage id ``trial_id``) reported epoch ``epoch`` with ``metrics``:
        judge it at every rung up to ``epoch`` it has no record for yet (one, unless results
        were buffered or the trial resumed past a rung), write the records, and say whether it
        goes on. The first rung that stops it ends the judging."""
        rungs = [r for r in trial_rungs(self.spec, trial_epochs(self.spec, params), params) if r <= int(epoch)]
        if not rungs:
            return Verdict(True, "no rung reached")
        trials = self._trials()
        by_number = {t.number: t for t in trials}
        lineage = self.lineage_of(number, by_number)
        judged = dict(by_number[number].user_attrs) if number in by_number else {}
        values = [rung_value(m, metrics, top1_history) for m in self.metrics]
        every: int | None = None  # the study's full_run_every, read once when a rung needs it
        verdict = Verdict(True, "below the first rung")
        for rung in rungs:
            if rung_key(rung) in judged:
                record = judged[rung_key(rung)]
                if not record.get("go_on", True):
                    return Verdict(False, _stop_reason(rung, record["reason"]), rung)
                continue  # judged already (a result seen twice)
            at_rung = self.records(rung, trials)
            earlier = at_rung.pop(lineage, None)
            if earlier is not None:  # an earlier attempt of this trial was judged here: keep its verdict
                record = {**earlier[1], "adopted_from": earlier[0]}
            else:
                against = sorted(n for n, _ in at_rung.values())
                recorded = [list(rec["values"]) for _, rec in sorted(at_rung.values(), key=lambda nr: nr[0])]
                if every is None:
                    every = self.study_full_run_every(trials)
                promote = bool(self.settings.promote)
                go_on, reason = rung_verdict(self.settings.kind, lineage, values, recorded, self.directions,
                                             self.settings.reduction_factor, every, promote=promote)
                record = {"epoch": rung, "reported_epoch": int(epoch), "values": values, "metrics": self.metrics,
                          "go_on": go_on, "reason": reason, "against": against, "lineage": lineage,
                          "full_run_every": every}
                if promote:
                    record.update(promote=True, waits=not go_on)
            self.storage.set_trial_user_attr(trial_id, rung_key(rung), record)
            judged[rung_key(rung)] = record
            if not record["go_on"]:
                return Verdict(False, _stop_reason(rung, record["reason"]), rung)
            verdict = Verdict(True, f"rung {rung}: {record['reason']}", rung)
        return verdict


def _stop_reason(rung: int, reason: str) -> str:
    return f"stopped at rung {rung} (epoch {rung}): {reason}"


def replay(spec: StudySpec, trials: Iterable[Any]) -> list[dict[str, Any]]:
    """Every rung record of ``trials`` (Optuna frozen trials) decided again from the records it
    names in ``against``: ``[{"number", "epoch", "recorded", "replayed"}]`` (an adopted record
    is its earlier attempt's decision and is skipped). Equal ``recorded`` and ``replayed`` show
    the decisions are reproducible from the storage alone."""
    trials = list(trials)
    settings = spec.search.early_stopping
    _, directions = rung_objectives(spec)
    by_number = {t.number: t for t in trials}
    out = []
    for trial in trials:
        for key, record in sorted(trial.user_attrs.items()):
            if (not key.startswith("rung_") or not isinstance(record, dict) or "adopted_from" in record
                    or "promoted_from" in record):
                continue  # an earlier attempt's decision, or a promotion (see :mod:`.promotion`)
            recorded = [list(by_number[n].user_attrs[key]["values"]) for n in record["against"]]
            go_on, reason = rung_verdict(settings.kind, int(record.get("lineage", trial.number)), record["values"],
                                         recorded, directions, settings.reduction_factor,
                                         int(record.get("full_run_every", 0)), promote=bool(record.get("promote")))
            out.append({"number": trial.number, "epoch": record["epoch"], "recorded": (record["go_on"], record["reason"]),
                        "replayed": (go_on, reason)})
    return out
