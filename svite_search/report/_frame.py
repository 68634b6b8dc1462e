"""An Optuna study as one pandas DataFrame: a row per trial, the columns a report reads.

Columns: ``number``, ``state``, ``method``, ``variant`` (dense, SViTE, S²ViTE, with a "+" when
SViTE+ tokens are selected), ``feasible`` (every constraint of the spec met), one column per objective (named by its metric: ``top1``,
``gmacs``), the result metrics the harness keeps as user attributes (``top1_best``,
``dense_gmacs``, ``flops_savings``, ``density``, ``wall_s``, ...; ``top1_history``, the per-epoch
top-1, as a JSON list), ``params.<name>`` for every
sampled parameter, ``datetime_start``, ``datetime_complete``, ``duration_s`` and ``error`` (why a
trial failed). Objective values come from ``trial.values`` when the trial completed and else
from its user attributes, so a failed trial that still measured something is not lost.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..search.study import REPEAT_ATTR, trial_attrs

#: The harness's default objectives.
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = (("top1", "maximize"), ("gmacs", "minimize"))

#: Variant labels used in tables and plot legends, in display order.
VARIANTS: tuple[str, ...] = ("dense", "dense+tokens", "SViTE", "SViTE+", "S²ViTE", "S²ViTE+")

_ERROR_ATTRS = ("error", "fail_reason", "failure", "exception")


@dataclass(frozen=True)
class Objective:
    """One objective of a study: the metric it reads and whether more is better."""

    metric: str
    direction: str  # "maximize" | "minimize"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def objectives_of(study: Any = None, spec: Mapping[str, Any] | None = None) -> list[Objective]:
    """The objectives of a study: the spec's ``objectives``, else Optuna's metric names and
    directions, else the harness's default (``top1`` up, ``gmacs`` down)."""
    raw = (spec or {}).get("objectives")
    if isinstance(raw, Sequence) and raw and not isinstance(raw, str):
        out = []
        for item in raw:
            if isinstance(item, Mapping):
                out.append(Objective(str(item["metric"]), str(item.get("direction", "maximize")).lower()))
            else:
                out.append(Objective(str(item), "maximize"))
        return out
    if study is not None:
        directions = [d.name.lower() for d in study.directions]
        names = getattr(study, "metric_names", None)
        if names and len(names) == len(directions):
            return [Objective(n, d) for n, d in zip(names, directions)]
        if len(directions) == len(DEFAULT_OBJECTIVES) and directions == [d for _, d in DEFAULT_OBJECTIVES]:
            return [Objective(m, d) for m, d in DEFAULT_OBJECTIVES]
        return [Objective(f"value_{i}", d) for i, d in enumerate(directions)]
    return [Objective(m, d) for m, d in DEFAULT_OBJECTIVES]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _uses_tokens(params: Mapping[str, Any], attrs: Mapping[str, Any]) -> bool:
    if attrs.get("keep_tokens") is not None:
        return True
    ratio = params.get("tokens.keep_ratio", params.get("keep_ratio"))
    if isinstance(ratio, (int, float)) and ratio < 1.0:
        return True
    return params.get("tokens.keep_tokens", params.get("keep_tokens")) is not None


def variant_label(method: str | None, tokens: bool) -> str:
    """``svite`` + tokens -> ``SViTE+``; the paper's names for the methods."""
    base = {"dense": "dense", "svite": "SViTE", "s2vite": "S²ViTE"}.get(str(method or "").lower(), str(method or "?"))
    if not tokens:
        return base
    return "dense+tokens" if base == "dense" else f"{base}+"


def trial_row(trial: Any, objectives: Sequence[Objective], default_method: str | None = None) -> dict[str, Any]:
    """One report row from an ``optuna.trial.FrozenTrial``."""
    attrs = trial_attrs(trial)
    params = dict(trial.params)
    state = trial.state.name
    method = params.get("method", attrs.get("method", default_method))
    constraints = dict(getattr(trial, "constraints", None) or {})
    row: dict[str, Any] = {"number": trial.number, "state": state, "method": method,
                           "variant": variant_label(method, _uses_tokens(params, attrs)),
                           "feasible": all(v <= 0.0 for v in constraints.values())}
    values = list(trial.values) if state == "COMPLETE" and trial.values is not None else None
    for i, objective in enumerate(objectives):
        if values is not None and len(values) == len(objectives):
            row[objective.metric] = float(values[i])
        else:
            value = attrs.get(objective.metric)
            row[objective.metric] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    for key, value in attrs.items():
        if key not in row and _scalar(value) and key not in _ERROR_ATTRS:
            row[key] = value
        elif key.endswith("_history") and isinstance(value, list):  # per-epoch curves, as JSON text
            row[key] = json.dumps(value)
    row["error"] = next((str(attrs[k]) for k in _ERROR_ATTRS if attrs.get(k)), None)
    for key, value in params.items():
        row[f"params.{key}"] = value
    row["datetime_start"] = trial.datetime_start
    row["datetime_complete"] = trial.datetime_complete
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        row["duration_s"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
    else:
        row["duration_s"] = math.nan
    return row


def trials_frame(trials: Iterable[Any], objectives: Sequence[Objective], default_method: str | None = None) -> pd.DataFrame:
    """All trials (any state) as a DataFrame sorted by trial number."""
    rows = [trial_row(t, objectives, default_method) for t in trials]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "method", "variant", "feasible", *[o.metric for o in objectives]])
    leading = ["number", "state", "method", "variant", "feasible", *[o.metric for o in objectives]]
    params = sorted(c for c in frame.columns if c.startswith("params."))
    tail = ["duration_s", "datetime_start", "datetime_complete", "error"]
    middle = [c for c in frame.columns if c not in leading and c not in params and c not in tail]
    return frame[leading + middle + params + tail].sort_values("number").reset_index(drop=True)


def repeat_mask(frame: pd.DataFrame) -> pd.Series:
    """The rows that are repeats recorded untrained (``search.repeats: skip``): PRUNED with a
    ``repeat_of``. They never trained, so the reports list them apart from trials stopped at a rung."""
    if frame.empty or REPEAT_ATTR not in frame.columns:
        return pd.Series(False, index=frame.index, dtype=bool)
    return (frame["state"] == "PRUNED") & frame[REPEAT_ATTR].notna()


def settings_text(row: Mapping[str, Any], skip: Iterable[str] = ("method",)) -> str:
    """A trial's sampled parameters as ``density=0.5, keep_ratio=0.9`` (short names)."""
    parts = []
    skip = set(skip)
    for key, value in row.items():
        if not str(key).startswith("params.") or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        name = str(key)[len("params."):]
        if name in skip:
            continue
        short = name.rsplit(".", 1)[-1]
        parts.append(f"{short}={value:.4g}" if isinstance(value, float) else f"{short}={value}")
    return ", ".join(parts)
