"""Parsing parameter sets a spec names (``search.enqueue``, ``search.points``)."""
from __future__ import annotations

import copy
import json
from typing import Any

from ..._mapping import flatten, set_dotted
from ...config import brief, config_from_dict
from ...errors import ConfigError
from ._distributions import _number
from ._types import Distribution


def _parse_enqueue(
    raw: list, base: dict[str, Any], dists: list[Distribution], field_name: str = "search.enqueue"
) -> tuple[dict[str, Any], ...]:
    """Parameter sets (``search.enqueue`` or ``search.points``): nested
    (``{sparsity: {density: 0.5}}``) or dotted keys, each naming searched parameters only, each
    value inside its distribution."""
    if not isinstance(raw, list):
        raise ConfigError(field_name, "expected a list of parameter sets")
    searched = {d.key: d for d in dists}
    out = []
    checked: dict[str, dict[str, Any]] = {}  # a repeated set (an alias used many times) is checked once
    for i, item in enumerate(raw):
        where = f"{field_name}[{i}]"
        if not isinstance(item, dict) or not item:
            raise ConfigError(where, "expected a mapping of searched parameters to values")
        identity = json.dumps(item, sort_keys=True, default=str)
        if identity in checked:
            out.append(dict(checked[identity]))
            continue
        params = flatten(item)
        trial = copy.deepcopy(base)
        for key, value in params.items():
            dist = searched.get(key)
            if dist is None:
                raise ConfigError(f"{where}.{key}", "is not a searched parameter"
                                  + (f" (searched: {', '.join(searched)})" if searched else " (nothing is searched)"))
            if dist.kind == "categorical":
                if value not in dist.choices:
                    raise ConfigError(f"{where}.{key}", f"{brief(value)} is not one of the choices {brief(list(dist.choices))}")
            else:
                number = _number(value, f"{where}.{key}")
                if not dist.low <= number <= dist.high:
                    raise ConfigError(f"{where}.{key}", f"{number:g} is outside [{dist.low:g}, {dist.high:g}]")
                value = int(number) if dist.kind == "int" else number
                params[key] = value
            set_dotted(trial, key, value)
        try:
            config_from_dict(trial)
        except ConfigError as err:
            raise ConfigError(f"{where}.{err.field}", str(err).split(": ", 1)[-1]) from None
        checked[identity] = params
        out.append(params)
    return tuple(out)
