"""How much compute a study spent, and what it bought: trial-epochs, trial-hours, and the
hypervolume against them.

A trial's epochs are what it trained, whatever its end: a completed trial's ``epochs`` result
attribute, else the last ``epoch`` the driver recorded while it ran (a stopped trial), else the
length of its ``top1_history``, else (a completed trial of an older study) the epochs its
settings asked for. Its hours are its run time in the storage (start to end), else its
``wall_s``. Early stopping is judged by this: a study that stops weak trials at a low rung
spends fewer trial-epochs for the same front, so the report plots the hypervolume against
trial-epochs, not only against the trial number.

``compute_history`` orders the finished trials (complete, stopped, failed; not the repeats
skipped untrained, which spent nothing) by the time they
ended: after each, the trial-epochs and trial-hours spent so far by finished trials, and the
hypervolume of the completed ones on both scales (:mod:`.pareto`).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ._frame import Objective, repeat_mask
from .pareto import Bounds, fixed_bounds, hypervolume_history

#: States whose trials have ended (their compute is spent).
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
COLUMNS = ["number", "state", "epochs", "hours", "trial_epochs", "trial_hours", "hypervolume", "hypervolume_fixed"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def planned_epochs(spec: Mapping[str, Any] | None, row: Mapping[str, Any]) -> float | None:
    """The epochs a trial's settings asked for: a sampled ``train.epochs``, else the spec's."""
    sampled = _number(row.get("params.train.epochs"))
    if sampled is not None:
        return sampled
    train = (spec or {}).get("train")
    return _number(train.get("epochs")) if isinstance(train, Mapping) else None


def trial_epochs(row: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> float:
    """Epochs one trial (a report-frame row) trained; 0 when nothing says (it never ran one). A
    trial that resumed a checkpoint (a promotion, a rerun) counts only the epochs after it
    (``resumed_at``): the epochs before were spent, and counted, by the trial it continues."""
    resumed = _number(row.get("resumed_at")) or 0.0
    for key in ("epochs", "epoch"):
        value = _number(row.get(key))
        if value is not None:
            return max(0.0, value - resumed)
    history = row.get("top1_history")
    if isinstance(history, str):
        try:
            history = json.loads(history)
        except ValueError:
            history = None
    if isinstance(history, list) and history:
        return float(len(history))
    if row.get("state") == "COMPLETE":
        return planned_epochs(spec, row) or 0.0
    return 0.0


def trial_hours(row: Mapping[str, Any]) -> float:
    """Hours one trial ran: its storage start-to-end time, else its ``wall_s``; 0 when unknown."""
    seconds = _number(row.get("duration_s"))
    if seconds is None:
        seconds = _number(row.get("wall_s"))
    return (seconds or 0.0) / 3600.0


def with_compute(frame: pd.DataFrame, spec: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``frame`` with ``epochs_run`` and ``hours_run`` columns (per trial)."""
    out = frame.copy()
    rows = out.to_dict("records")
    out["epochs_run"] = [trial_epochs(r, spec) for r in rows]
    out["hours_run"] = [trial_hours(r) for r in rows]
    return out


def compute_spent(frame: pd.DataFrame, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Trial-epochs and trial-hours, in all and by how trials ended.

    ``{"trial_epochs", "trial_hours", "by_state": {state: {"trials", "trial_epochs",
    "trial_hours"}}}``; states: COMPLETE, PRUNED (stopped early), REPEAT (a repeat skipped
    untrained: nothing spent), FAIL, RUNNING (spent so far).
    """
    if frame.empty:
        return {"trial_epochs": 0.0, "trial_hours": 0.0, "by_state": {}}
    framed = with_compute(frame, spec)
    repeats = repeat_mask(framed)
    framed.loc[repeats, ["epochs_run", "hours_run"]] = 0.0
    by_state = {}
    for state in ("COMPLETE", "PRUNED", "REPEAT", "FAIL", "RUNNING"):
        part = framed[repeats] if state == "REPEAT" else framed[(framed["state"] == state) & ~repeats]
        if len(part):
            by_state[state] = {"trials": int(len(part)), "trial_epochs": float(part["epochs_run"].sum()),
                               "trial_hours": float(part["hours_run"].sum())}
    return {"trial_epochs": float(framed["epochs_run"].sum()), "trial_hours": float(framed["hours_run"].sum()),
            "by_state": by_state}


def compute_history(frame: pd.DataFrame, objectives: Sequence[Objective], spec: Mapping[str, Any] | None = None,
                    bounds: Bounds | None = None) -> pd.DataFrame:
    """After each finished trial, in the order they ended: compute spent so far and hypervolume.

    Columns :data:`COLUMNS`. ``hypervolume`` is on the study's own scale (as
    ``hypervolume.csv``), ``hypervolume_fixed`` on the fixed one (``bounds``, else
    :func:`~.pareto.fixed_bounds`; NaN without one). Trials without an end time keep their
    trial-number order among the others.
    """
    if frame.empty or "state" not in frame:
        return pd.DataFrame(columns=COLUMNS)
    framed = with_compute(frame[frame["state"].isin(FINISHED) & ~repeat_mask(frame)], spec)  # a skipped repeat spent nothing
    if framed.empty:
        return pd.DataFrame(columns=COLUMNS)
    ends = pd.to_datetime(framed.get("datetime_complete"), errors="coerce") if "datetime_complete" in framed \
        else pd.Series(pd.NaT, index=framed.index)
    framed = framed.assign(_end=ends).sort_values(["_end", "number"], na_position="last", kind="stable")
    order = framed["number"].astype(int).tolist()
    if bounds is None:
        bounds = fixed_bounds(objectives, frame)
    # the hypervolume after each completed trial, in end order: a history of a frame whose
    # trial numbers are replaced by the end-order position
    complete = framed[framed["state"] == "COMPLETE"].assign(number=lambda f: [order.index(int(n)) for n in f["number"]])
    hv = hypervolume_history(complete, objectives, bounds) if len(objectives) >= 2 and len(complete) else None
    by_position = {} if hv is None else {int(r.number): (r.hypervolume, r.hypervolume_fixed) for r in hv.itertuples()}
    rows, last = [], (0.0, math.nan if bounds is None else 0.0)
    spent_epochs = spent_hours = 0.0
    for position, row in enumerate(framed.to_dict("records")):
        spent_epochs += row["epochs_run"]
        spent_hours += row["hours_run"]
        last = by_position.get(position, last)
        rows.append({"number": int(row["number"]), "state": row["state"], "epochs": row["epochs_run"],
                     "hours": row["hours_run"], "trial_epochs": spent_epochs, "trial_hours": spent_hours,
                     "hypervolume": float(last[0]), "hypervolume_fixed": float(last[1])})
    return pd.DataFrame(rows, columns=COLUMNS)
