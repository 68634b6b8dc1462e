"""What a study's trials came to: a trial's outcome told to the study (its result metrics as user
attributes, in one transaction), the counts by state, and the Pareto front."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..objective import COMPLETE, PRUNED, TrialOutcome
from ..spec import StudySpec
from ._drivers import REASON_ATTR


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set several user attributes of a running trial in one storage transaction.

    Why: a finished trial carries some thirty result attributes, and ``Trial.set_user_attr``
    commits each on its own (on sqlite, one journal sync per attribute, ~90 ms per trial). Optuna
    has no public call that writes several at once, so on an RDB storage the attributes go through
    the storage's own per-attribute writer inside a single session and commit; any other storage
    (or an Optuna without that writer) gets one ``set_user_attr`` per attribute, as before. The
    stored rows are the same either way.
    """
    if not attrs:
        return
    storage = trial.storage
    backend = getattr(storage, "_backend", storage)  # the study's cache wraps the RDB storage
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if isinstance(backend, optuna.storages.RDBStorage) and write is not None:
        try:
            from optuna.storages._rdb.models import TrialUserAttributeModel
            from optuna.storages._rdb.storage import _create_scoped_session
        except ImportError:
            pass
        else:
            with _create_scoped_session(backend.scoped_session, True) as session:
                if not _upsert_user_attrs(backend, session, TrialUserAttributeModel, trial._trial_id, attrs):
                    for key, value in attrs.items():
                        write(session, TrialUserAttributeModel, trial._trial_id, key, value)
            trial._cached_frozen_trial.user_attrs.update(attrs)
            return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _upsert_user_attrs(backend: Any, session: Any, model: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """All attributes as one multi-row upsert (sqlite, PostgreSQL), after the same "is the trial
    still running" check Optuna makes; False where the dialect has no such statement."""
    name = backend.engine.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return False
    from optuna.storages._rdb.models import TrialModel

    row = TrialModel.find_or_raise_by_id(trial_id, session)
    backend.check_trial_is_updatable(trial_id, row.state)
    statement = insert(model).values(
        [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    )
    session.execute(statement.on_conflict_do_update(
        index_elements=[model.trial_id, model.key], set_={"value_json": statement.excluded.value_json}
    ))
    return True


def record_outcome(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, spec: StudySpec) -> None:
    """Tell the study how a trial ended, with every result metric as a user attribute (written in
    one transaction, see :func:`set_user_attrs`) and the spec's constraints as Optuna constraints
    (feasible when <= 0)."""
    attrs = dict(outcome.attrs)
    if outcome.state == PRUNED:
        attrs["pruned_reason"] = outcome.error or "pruned"
    elif outcome.state != COMPLETE:
        attrs[REASON_ATTR] = outcome.error or "failed"
    set_user_attrs(trial, attrs)
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

    @property
    def finished(self) -> int:
        """Trials that count towards ``n_trials``."""
        return self.complete + self.pruned


def study_counts(study: optuna.Study) -> Counts:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Counts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
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
