"""What a study's trials came to: a trial's outcome told to the study (its result metrics as one
user attribute, read back by :func:`trial_attrs`), the counts by state, and the Pareto front."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..objective import COMPLETE, PRUNED, TrialOutcome
from ..spec import StudySpec
from ._drivers import REASON_ATTR, is_skipped_repeat


#: the user attribute holding a finished trial's result metrics, as one JSON object
RESULT_ATTR = "result"


def set_result_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Store a finished trial's result metrics as one JSON user attribute (:data:`RESULT_ATTR`).

    Why one attribute: a trial carries some thirty result metrics, and Optuna writes each user
    attribute in its own storage transaction (on sqlite, a journal sync apiece); one object costs
    one, through Optuna's public ``Trial.set_user_attr``. Read it back with :func:`trial_attrs`.
    """
    if attrs:
        trial.set_user_attr(RESULT_ATTR, dict(attrs))


def trial_attrs(trial: Any) -> dict[str, Any]:
    """A trial's user attributes with its result metrics (:data:`RESULT_ATTR`) unpacked in place:
    the one view the report, the status, the tracker and the monitor read. Attributes stored one
    by one (the progress a running trial reports, studies written before the result object) read
    as they are; the result's entries win over a same-named progress attribute."""
    stored = trial.user_attrs
    result = stored.get(RESULT_ATTR)
    if not isinstance(result, dict):
        return dict(stored)
    merged = {key: value for key, value in stored.items() if key != RESULT_ATTR}
    merged.update(result)
    return merged


def record_outcome(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, spec: StudySpec) -> None:
    """Tell the study how a trial ended: its result metrics as one user attribute (see
    :func:`set_result_attrs`), why it was pruned or failed as its own attribute (what Optuna's
    dashboard and the recovery read), and the spec's constraints as Optuna constraints (feasible
    when <= 0)."""
    set_result_attrs(trial, dict(outcome.attrs))
    if outcome.state == PRUNED:
        trial.set_user_attr("pruned_reason", outcome.error or "pruned")
    elif outcome.state != COMPLETE:
        trial.set_user_attr(REASON_ATTR, outcome.error or "failed")
    if outcome.state == COMPLETE:
        for constraint in spec.constraints:
            trial.set_constraint(constraint.name, constraint.violation(float(outcome.attrs[constraint.metric])))
        study.tell(trial, outcome.values)
    elif outcome.state == PRUNED:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


@dataclass(frozen=True)
class Counts:
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    #: of the pruned, repeats recorded untrained (``search.repeats: skip``; :mod:`._repeats`)
    repeats: int = 0

    @property
    def finished(self) -> int:
        """Trials that count towards ``n_trials``: complete and pruned, skipped repeats not."""
        return self.complete + self.pruned - self.repeats


def study_counts(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None) -> Counts:
    """The study's trials by state; ``trials``: a list just read from it (saves reading it again)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    return Counts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        repeats=sum(1 for t in trials if is_skipped_repeat(t)),
    )


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial meets every constraint (violations <= 0; none recorded: yes)."""
    constraints = trial.constraints or []  # a dict by name in Optuna 5, a list before
    values = constraints.values() if isinstance(constraints, dict) else constraints
    return all(float(c) <= 0.0 for c in values)


def pareto_front(study: optuna.Study) -> list[dict[str, Any]]:
    """The best trials (the Pareto front; feasible ones only under constraints), by number."""
    from ...metrics.pareto import non_dominated

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and is_feasible(t)]
    if not done:
        return []
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    mask = non_dominated([list(t.values) for t in done], maximize)  # ties within float32 noise are ties
    best = [t for t, keep in zip(done, mask) if keep]
    return [{"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in sorted(best, key=lambda t: t.number)]
