"""Parameter importances per objective, from Optuna's importance evaluators.

Optuna's default evaluator (PED-ANOVA in Optuna 5) handles conditional parameters, which a
study over methods has (``sparsity.density`` exists only for sparse trials). Importances need
at least two completed trials and a parameter that varies; otherwise the table stays empty and
the reason is returned, so a report of a small study still writes.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

import pandas as pd

from ._frame import Objective

log = logging.getLogger(__name__)


def param_importances(study: Any, objectives: Sequence[Objective]) -> tuple[pd.DataFrame, str | None]:
    """``(frame with columns objective, param, importance; None)``, or an empty frame and why."""
    import optuna
    from optuna.trial import TrialState

    columns = ["objective", "param", "importance"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return pd.DataFrame(columns=columns), f"needs at least 2 completed trials ({len(complete)} so far)"
    varying = {
        name for name in {p for t in complete for p in t.params}
        if len({repr(t.params.get(name)) for t in complete}) > 1
    }
    if not varying:
        return pd.DataFrame(columns=columns), "no sampled parameter takes more than one value"
    rows = []
    reasons = []
    for i, objective in enumerate(objectives):
        try:
            # the evaluator ranks what it takes to make the target *small*: flip maximised objectives
            sign = -1.0 if objective.maximize else 1.0
            with warnings.catch_warnings():  # its reminder about the sign, which is handled just above
                warnings.filterwarnings("ignore", message=".*achieve low `target` values.*")
                warnings.filterwarnings("ignore", message=".*have less than 2 trials.*")  # said in the summary
                scores = optuna.importance.get_param_importances(study, target=lambda t, i=i, s=sign: s * t.values[i])
        except Exception as err:  # too few distinct values, a degenerate objective, ...
            reasons.append(f"{objective.metric}: {type(err).__name__}: {err}")
            continue
        rows.extend({"objective": objective.metric, "param": p, "importance": float(v)} for p, v in scores.items())
    reason = "; ".join(reasons) if reasons and not rows else None
    if reasons:
        log.info("parameter importances: %s", "; ".join(reasons))
    return pd.DataFrame(rows, columns=columns), reason
