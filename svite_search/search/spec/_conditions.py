"""Which searched values apply to a run, and the grid they span.

A parameter is only sampled where it means something, so samplers do not learn from values a
run ignored:

- ``sparsity.density`` and ``sparsity.distribution``: SViTE only;
- ``sparsity.head_density`` and ``sparsity.mlp_density``: S²ViTE only;
- every other ``sparsity.*`` value (update interval, prune rate and its decay, ``t_end``, ...):
  SViTE and S²ViTE, not dense;
- ``tokens.tau_*``: only when SViTE+ token selection is on (``keep_ratio < 1`` or
  ``keep_tokens`` set).

``method`` and the token settings come first (:func:`ordered`), so the conditions can be decided.
The spec's parser checks a grid by these rules; :mod:`svite_search.search.space` suggests by them.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from ._types import Distribution, StudySpec

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


#: the searched values that shrink a run's compute as they go down (fewer weights, heads, neurons
#: or tokens kept): MACs fall monotonically with each, the other values leave them unchanged
SHRINKING = ("sparsity.density", "sparsity.head_density", "sparsity.mlp_density") + TOKEN_SWITCHES


def cheapest_points(spec: StudySpec) -> list[dict[str, Any]]:
    """``search.enqueue_cheapest``: for each method the space holds, its cheapest setting, every
    :data:`SHRINKING` value it searches at the low end of its range (other values are left to the
    sampler; the spec's parser refuses the setting when the model or its input is searched). MACs
    fall with each of them, so each set has the fewest MACs its method can have,
    and one of them the fewest of the whole space, exactly, without counting any: nothing can
    dominate that one on MACs, and what it reaches in accuracy bounds the study's front at its
    cheap end, the part of the front a search led by accuracy finds last."""
    dists = {d.key: d for d in spec.distributions}
    method = dists.get("method")
    methods = [{"method": m} for m in method.choices] if method is not None else [{}]
    points = []
    for point in methods:
        for key in SHRINKING:
            dist = dists.get(key)
            if dist is not None and applies(spec, key, point):
                point = {**point, key: _lowest(dist)}
        if point:
            points.append(point)
    return points


def _lowest(dist: Distribution) -> Any:
    if dist.kind == "categorical":
        return min((c for c in dist.choices if c is not None), default=None)
    return int(dist.low) if dist.kind == "int" else float(dist.low)


def initial_queue(spec: StudySpec, limit: int | None = None) -> list[dict[str, Any]]:
    """The parameter sets a new study runs first: ``search.enqueue``, then the cheapest setting
    of each method (``search.enqueue_cheapest``), then (sampler ``grid``) every grid point, each
    distinct set once."""
    queue: list[dict[str, Any]] = []
    seen: set[str] = set()
    points = (list(spec.enqueue) + (cheapest_points(spec) if spec.search.enqueue_cheapest else [])
              + (grid_points(spec, limit) if spec.search.sampler == "grid" else []))
    for point in points:
        key = json.dumps(point, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            queue.append(dict(point))
    return queue
