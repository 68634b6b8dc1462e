"""The search space: spec distributions -> Optuna suggest calls, with conditional parameters.

A parameter is only sampled where it means something, so samplers do not learn from values a
run ignored:

- ``sparsity.density`` and ``sparsity.distribution``: SViTE only;
- ``sparsity.head_density`` and ``sparsity.mlp_density``: S²ViTE only;
- every other ``sparsity.*`` value (update interval, prune rate and its decay, ``t_end``, ...):
  SViTE and S²ViTE, not dense;
- ``tokens.tau_*``: only when SViTE+ token selection is on (``keep_ratio < 1`` or
  ``keep_tokens`` set).

``method`` and the token settings are suggested first, so the conditions can be decided.
Parameters are named by their dotted config key (``sparsity.density``).

Example::

    params = suggest_params(trial, spec)          # trial: optuna.Trial
    cfg = trial_config(spec, params, name="quickstart-t3")
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterable, Mapping

from ..config import RunConfig, config_from_dict
from .spec import Distribution, StudySpec, set_key

SVITE_ONLY = ("sparsity.density", "sparsity.distribution")
S2VITE_ONLY = ("sparsity.head_density", "sparsity.mlp_density")
TOKEN_SWITCHES = ("tokens.keep_ratio", "tokens.keep_tokens")
_FIRST = ("method", "preset") + TOKEN_SWITCHES


def _lookup(spec: StudySpec, params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    if key in params:
        return params[key]
    node: Any = spec.base
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def tokens_on(spec: StudySpec, params: Mapping[str, Any]) -> bool:
    """Whether SViTE+ token selection is on for these parameters."""
    keep_ratio = _lookup(spec, params, "tokens.keep_ratio", 1.0)
    keep_tokens = _lookup(spec, params, "tokens.keep_tokens", None)
    return keep_tokens is not None or (keep_ratio is not None and float(keep_ratio) < 1.0)


def applies(spec: StudySpec, key: str, params: Mapping[str, Any]) -> bool:
    """Whether parameter ``key`` affects a run with the parameters chosen so far."""
    method = _lookup(spec, params, "method", "dense")
    if key in SVITE_ONLY:
        return method == "svite"
    if key in S2VITE_ONLY:
        return method == "s2vite"
    if key.startswith("sparsity."):
        return method in ("svite", "s2vite")
    if key.startswith("tokens.tau"):
        return tokens_on(spec, params)
    return True


def ordered(distributions: Iterable[Distribution]) -> list[Distribution]:
    """The distributions in suggestion order: method and token switches first, then spec order."""
    dists = list(distributions)
    first = [d for key in _FIRST for d in dists if d.key == key]
    return first + [d for d in dists if d.key not in _FIRST]


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


def grid_points(spec: StudySpec, limit: int | None = None) -> list[dict[str, Any]]:
    """Every distinct parameter set of the grid, conditions respected, in a fixed order.

    A plain Cartesian product would repeat a configuration once per value of every parameter it
    ignores (a dense run for each head density); this enumerates each configuration once.
    With ``search.points`` the grid is exactly those sets (a paper's chosen runs). More than
    ``limit`` points raise :class:`OverflowError` before they are all listed.
    """
    if spec.points:
        return [dict(point) for point in spec.points]
    points: list[dict[str, Any]] = [{}]
    for dist in ordered(spec.distributions):
        values = dist.grid_values()
        if values is None:
            raise ValueError(f"{dist.key}: continuous; a grid needs choices or a step")
        grown = []
        for point in points:
            if applies(spec, dist.key, point):
                grown.extend({**point, dist.key: value} for value in values)
            else:
                grown.append(point)
            if limit is not None and len(grown) > limit:
                raise OverflowError(f"the grid has more than {limit} points")
        points = grown
    return points


def initial_queue(spec: StudySpec, limit: int | None = None) -> list[dict[str, Any]]:
    """The parameter sets a new study runs first: ``search.enqueue``, then (sampler ``grid``)
    every grid point, each distinct set once."""
    queue: list[dict[str, Any]] = []
    seen: set[str] = set()
    points = list(spec.enqueue) + (grid_points(spec, limit) if spec.search.sampler == "grid" else [])
    for point in points:
        key = json.dumps(point, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            queue.append(dict(point))
    return queue


def trial_config_dict(spec: StudySpec, params: Mapping[str, Any], *, name: str | None = None) -> dict[str, Any]:
    """The raw run-config mapping of one trial: the spec's constants with ``params`` set."""
    data = copy.deepcopy(spec.base)
    for key, value in params.items():
        set_key(data, key, value)
    data["name"] = name or spec.name
    data["tracking"] = {"enabled": False}  # the study tracker logs trials, from the driver
    return data


def trial_config(spec: StudySpec, params: Mapping[str, Any], *, name: str | None = None) -> RunConfig:
    """The validated run config of one trial (a :class:`ConfigError` if the combination is invalid)."""
    return config_from_dict(trial_config_dict(spec, params, name=name))
