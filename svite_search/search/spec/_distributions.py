"""Parsing one searched value: ``{low, high[, log, step]}`` or ``{choices: [...]}``, typed by the
run-config field it searches, and splitting a spec into its constants and its distributions."""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any

from ...config import RunConfig, brief
from ...errors import ConfigError
from ._types import _NUMERIC_KEYS, _SCALAR, RUN_SCALARS, RUN_SECTIONS, Distribution


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {name: hints[name] for name in RUN_SECTIONS}


def _field_type(section: str | None, name: str) -> Any:
    """The declared type of a run-config field, without ``| None``."""
    owner = RunConfig if section is None else _section_types()[section]
    hints = typing.get_type_hints(owner)
    if name not in hints:
        return None
    args = [a for a in typing.get_args(hints[name]) if a is not type(None)]
    return args[0] if len(args) == 1 else hints[name]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not _is_number(value):
        raise ConfigError(key, f"expected a number, got {type(value).__name__} {brief(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(key, f"{brief(value)} is not a finite number")
    return number


def parse_distribution(key: str, raw: dict[str, Any], field_type: Any) -> Distribution:
    """A distribution from its spec mapping; ``field_type`` is the config field's type."""
    keys = set(raw)
    if keys == {"choices"}:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}.choices", "expected a non-empty list")
        for i, value in enumerate(choices):
            if not isinstance(value, _SCALAR):
                raise ConfigError(f"{key}.choices[{i}]", f"expected a scalar, got {type(value).__name__}")
        if len({json.dumps(v) for v in choices}) != len(choices):
            raise ConfigError(f"{key}.choices", "has duplicates")
        return Distribution(key, "categorical", choices=tuple(choices))
    unknown = keys - _NUMERIC_KEYS
    if unknown or not {"low", "high"} <= keys:
        raise ConfigError(
            key,
            "a search distribution is {low, high[, log, step]} or {choices: [...]}"
            + (f" (unknown: {', '.join(sorted(map(str, unknown)))})" if unknown else ""),
        )
    if field_type not in (int, float):
        raise ConfigError(key, "is not numeric: search it with {choices: [...]}")
    low, high = _number(raw["low"], f"{key}.low"), _number(raw["high"], f"{key}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log", f"expected true or false, got {log!r}")
    step = None if raw.get("step") is None else _number(raw["step"], f"{key}.step")
    if low > high:
        raise ConfigError(f"{key}.low", f"{low:g} is above high ({high:g})")
    if log and low <= 0:
        raise ConfigError(f"{key}.low", "must be > 0 with log: true")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{key}.step", "must be > 0")
        if log and not (field_type is int and step == 1):
            raise ConfigError(f"{key}.step", "cannot be combined with log: true")
    if field_type is int:
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                raise ConfigError(f"{key}.{name}", f"{value:g} is not an integer (the field is an int)")
        return Distribution(key, "int", low=int(low), high=int(high), log=log, step=int(step) if step else None)
    return Distribution(key, "float", low=low, high=high, log=log, step=step)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict)


def _split(data: dict[str, Any]) -> tuple[dict[str, Any], list[Distribution]]:
    """The run-config part of a spec with every distribution replaced by its first value."""
    base: dict[str, Any] = {}
    dists: list[Distribution] = []
    for key in RUN_SCALARS:
        if key not in data:
            continue
        value = data[key]
        if _is_distribution(value):
            dist = parse_distribution(key, value, _field_type(None, key))
            dists.append(dist)
            value = dist.first()
        base[key] = value
    types = _section_types()
    for section in RUN_SECTIONS:
        if section not in data or data[section] is None:
            continue
        raw = data[section]
        if not isinstance(raw, dict):
            raise ConfigError(section, f"expected a mapping, got {type(raw).__name__}")
        out = {}
        for name, value in raw.items():
            if _is_distribution(value):
                ftype = _field_type(section, name)
                if ftype is None:
                    known = ", ".join(f.name for f in dataclasses.fields(types[section]))
                    raise ConfigError(f"{section}.{name}", f"unknown key (allowed: {known})")
                dist = parse_distribution(f"{section}.{name}", value, ftype)
                dists.append(dist)
                value = dist.first()
            out[name] = value
        base[section] = out
    return base, dists
