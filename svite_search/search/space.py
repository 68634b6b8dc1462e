"""The search space: spec distributions -> Optuna suggest calls, with conditional parameters.

A parameter is only sampled where it means something (the rules, and the grid they span, are
the spec's: :mod:`svite_search.search.spec._conditions`, re-exported here). ``method`` and the
token settings are suggested first, so the conditions can be decided. Parameters are named by
their dotted config key (``sparsity.density``).

Example::

    params = suggest_params(trial, spec)          # trial: optuna.Trial
    cfg = trial_config(spec, params, name="quickstart-t3")
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from ..config import RunConfig, config_from_dict
from .._mapping import set_dotted
from .spec import (S2VITE_ONLY, SVITE_ONLY, TOKEN_SWITCHES, Distribution, StudySpec, applies, grid_points,
                   initial_queue, ordered, tokens_on)

__all__ = [
    "S2VITE_ONLY", "SVITE_ONLY", "TOKEN_SWITCHES", "applies", "grid_points", "initial_queue", "ordered",
    "suggest_one", "suggest_params", "tokens_on", "trial_config", "trial_config_dict",
]


def suggest_one(trial: Any, dist: Distribution) -> Any:
    """One ``trial.suggest_*`` call for a distribution."""
    if dist.kind == "categorical":
        return trial.suggest_categorical(dist.key, list(dist.choices))
    if dist.kind == "int":
        return trial.suggest_int(dist.key, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.log)
    return trial.suggest_float(dist.key, float(dist.low), float(dist.high), step=dist.step, log=dist.log)


def suggest_params(trial: Any, spec: StudySpec) -> dict[str, Any]:
    """Sample one trial's parameters (define-by-run, so the conditions above hold)."""
    params: dict[str, Any] = {}
    for dist in ordered(spec.distributions):
        if applies(spec, dist.key, params):
            params[dist.key] = suggest_one(trial, dist)
    return params


def trial_config_dict(spec: StudySpec, params: Mapping[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """The raw run-config mapping of one trial: the spec's constants with ``params`` set."""
    data = copy.deepcopy(spec.base)
    for key, value in params.items():
        set_dotted(data, key, value)
    data["name"] = name or spec.name
    data["tracking"] = {"enabled": False}  # the study tracker logs trials, from the driver
    return data


def trial_config(spec: StudySpec, params: Mapping[str, Any], *, name: str | None = None) -> RunConfig:
    """The validated run config of one trial (a :class:`ConfigError` if the combination is invalid)."""
    return config_from_dict(trial_config_dict(spec, params, name=name))
