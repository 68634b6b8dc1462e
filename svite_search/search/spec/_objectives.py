"""Parsing a spec's ``objectives`` and ``constraints``."""
from __future__ import annotations

import re
from typing import Any

from ...config import brief
from ...errors import ConfigError
from ._distributions import _number
from ._types import DEFAULT_OBJECTIVES, METRICS, Constraint, Objective


def _parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if raw is None:
        return tuple(Objective(m, d) for m, d in DEFAULT_OBJECTIVES)
    if not isinstance(raw, list) or not raw:
        raise ConfigError("objectives", "expected a non-empty list of {metric, direction}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        where = f"objectives[{i}]"
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            raise ConfigError(where, "expected a metric name or {metric, direction}")
        unknown = set(item) - {"metric", "direction"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key (allowed: metric, direction)")
        metric = item.get("metric")
        if metric not in METRICS:
            raise ConfigError(f"{where}.metric", f"{brief(metric)} is not one of {', '.join(METRICS)}")
        direction = str(item.get("direction", METRICS[metric])).lower()
        direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"{where}.direction", f"{item.get('direction')!r} is not maximize or minimize")
        if any(o.metric == metric for o in out):
            raise ConfigError(f"{where}.metric", f"{metric} is already an objective")
        out.append(Objective(metric, direction))
    return tuple(out)


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def _parse_constraints(raw: Any) -> tuple[Constraint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("constraints", "expected a list such as ['gmacs <= 0.001']")
    out = []
    for i, item in enumerate(raw):
        where = f"constraints[{i}]"
        if isinstance(item, str):
            match = _CONSTRAINT.match(item)
            if not match:
                raise ConfigError(where, f"{brief(item)}: expected 'METRIC <= NUMBER' or 'METRIC >= NUMBER'")
            metric, op, bound = match.group(1), match.group(2), match.group(3)
        elif isinstance(item, dict) and set(item) in ({"metric", "max"}, {"metric", "min"}):
            metric = item["metric"]
            op, bound = ("<=", item["max"]) if "max" in item else (">=", item["min"])
        else:
            raise ConfigError(where, "expected 'METRIC <= NUMBER' or {metric, max} or {metric, min}")
        if metric not in METRICS:
            raise ConfigError(where, f"{brief(metric)} is not one of {', '.join(METRICS)}")
        out.append(Constraint(str(metric), op, _number(bound, where)))
    return tuple(out)
