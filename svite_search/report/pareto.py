"""Pareto fronts and hypervolume of a set of trials.

A trial is on the front (non-dominated) when no other trial is at least as good in every
objective and strictly better in one; trials with identical values are all kept. Values closer
than a millionth of the objective's magnitude count as identical (``ACCURACY_RTOL``): top-1 is
stored as float32 or float64 depending on the code path, and 325 of 360 correct must tie with
itself. The
hypervolume is computed on normalised objectives, so it reads as a share: every objective is
mapped to [0, 1] with 0 at the reference point (the worst value seen, pushed out by 10 % of the
range) and 1 at the best value seen, and the hypervolume is the share of that unit box the front
dominates. With two objectives (the usual accuracy-vs-MACs study) the front and the hypervolume
history are kept in one sweep over the trials (O(n log n)); with more, the project's exact
hypervolume (:func:`~svite_search.metrics.pareto.hypervolume_exact`) does the counting, once per
trial that joins the front.

That scale is the study's own, so its figures do not compare across studies. Beside it sits a
*fixed* scale (:func:`fixed_bounds`) that does not depend on the trials: an accuracy objective
runs from 0 % (reference) to 100 % (ideal); MACs from the dense model's MACs to 0; non-zero
parameters from the dense model's parameter count to 0; density from 1 to 0; the MACs saving
from 0 to 1. A trial beyond the reference (more MACs than the dense model) adds nothing. An
objective without a natural bound (latency, wall time, validation loss) takes the dense
baseline's value when the study has a completed dense trial, else the worst value seen; the
bounds then say it is not fixed (``Bounds.fixed``), and only studies compared on one pooled
scale (``svite-search compare``) share it.

Example::

    mask = non_dominated(frame[["top1", "gmacs"]].to_numpy(), [True, False])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import math

import numpy as np
import pandas as pd

from ..metrics.pareto import (ACCURACY_RTOL, IncrementalFront, as_losses as _as_losses, hypervolume_exact,
                              hypervolume_sweep, non_dominated, snap_ties, tolerances)
from ._frame import Objective

__all__ = ["ACCURACY_RTOL", "non_dominated", "tolerances", "pareto_mask", "normalisation", "hypervolume",
           "hypervolume_history", "Bounds", "fixed_bounds"]

#: How far past the worst value the reference point sits, as a share of the observed range.
REFERENCE_MARGIN = 0.1


def pareto_mask(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    """Non-dominated COMPLETE (and feasible, under constraints) trials of a report frame, as a
    boolean Series on its index: Optuna's ``study.best_trials``, with ties compared under the tolerance."""
    complete = frame["state"] == "COMPLETE" if "state" in frame else pd.Series(True, index=frame.index)
    if "feasible" in frame:
        complete = complete & frame["feasible"].astype(bool)
    values = frame.loc[complete, [o.metric for o in objectives]].to_numpy(dtype=float)
    mask = pd.Series(False, index=frame.index)
    if len(values):
        mask.loc[complete[complete].index] = non_dominated(values, [o.maximize for o in objectives])
    return mask


def normalisation(values: np.ndarray, maximize: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """``(reference, ideal)`` in loss space: the worst loss plus a 10 % margin, and the best."""
    losses = _as_losses(values, maximize)
    losses = losses[np.all(np.isfinite(losses), axis=1)]
    if not len(losses):
        raise ValueError("no finite objective values")
    worst, best = losses.max(axis=0), losses.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(np.abs(worst), 1.0) * 0.01)
    return worst + REFERENCE_MARGIN * span, best


def hypervolume(values: np.ndarray, maximize: Sequence[bool], reference: np.ndarray, ideal: np.ndarray) -> float:
    """Share of the box between ``reference`` and ``ideal`` (loss space) that ``values`` dominate."""
    losses = _as_losses(values, maximize)
    losses = losses[np.all(np.isfinite(losses), axis=1)]
    scale = reference - ideal
    scaled = (losses - ideal) / scale
    inside = scaled[np.all(scaled < 1.0, axis=1)]  # a point beyond the reference adds nothing
    if not len(inside):
        return 0.0
    return float(hypervolume_exact(inside.tolist(), [1.0] * len(maximize)))


#: Objectives with a natural fixed range: metric -> (reference, ideal) in the metric's own units;
#: ``"dense"`` stands for the dense model's value, read from the trials' attributes.
FIXED_RANGES: dict[str, tuple[Any, float]] = {
    "top1": (0.0, 100.0), "top1_final": (0.0, 100.0), "top1_best": (0.0, 100.0), "top5": (0.0, 100.0),
    "flops_savings": (0.0, 1.0), "density": (1.0, 0.0), "gmacs": ("dense", 0.0), "params_nonzero": ("dense", 0.0),
}
#: Where the dense model's value of a cost objective is kept on every trial.
DENSE_ATTRS = {"gmacs": "dense_gmacs", "params_nonzero": "params_total"}


@dataclass(frozen=True)
class Bounds:
    """A hypervolume scale: ``reference`` and ``ideal`` in loss space (maximised objectives
    negated), and per objective whether its reference is ``fixed`` (independent of the trials)."""

    reference: np.ndarray
    ideal: np.ndarray
    fixed: tuple[bool, ...]

    @property
    def all_fixed(self) -> bool:
        return all(self.fixed)

    def points(self, objectives: Sequence[Objective]) -> dict[str, dict[str, float]]:
        """``{"reference": {metric: value}, "ideal": {...}}`` in the metrics' own units and signs."""
        signs = np.where(np.asarray([o.maximize for o in objectives]), -1.0, 1.0)
        metrics = [o.metric for o in objectives]
        return {"reference": dict(zip(metrics, (self.reference * signs).tolist())),
                "ideal": dict(zip(metrics, (self.ideal * signs).tolist()))}


def _dense_value(frames: Sequence[pd.DataFrame], metric: str) -> float | None:
    """The dense model's value of a cost objective: the trials' ``dense_*`` attribute (every
    trial of a study records it), else the mean of the completed dense trials."""
    attr = DENSE_ATTRS.get(metric)
    values: list[float] = []
    for frame in frames:
        if attr and attr in frame:
            values += pd.to_numeric(frame[attr], errors="coerce").dropna().tolist()
    if values:
        return float(np.median(values))
    for frame in frames:
        if metric in frame and "variant" in frame:
            dense = frame[(frame["state"] == "COMPLETE") & (frame["variant"] == "dense")]
            values += pd.to_numeric(dense[metric], errors="coerce").dropna().tolist()
    return float(np.mean(values)) if values else None


def fixed_bounds(objectives: Sequence[Objective], *frames: pd.DataFrame) -> Bounds | None:
    """The fixed hypervolume scale of the module doc for studies with these trial frames (the
    dense model's MACs come from them), or ``None`` when an objective has no value to scale by."""
    reference, ideal, fixed = [], [], []
    for o in objectives:
        sign = -1.0 if o.maximize else 1.0
        ref, best = FIXED_RANGES.get(o.metric, (None, 0.0))
        is_fixed = ref is not None
        if ref == "dense":
            ref = _dense_value(frames, o.metric)
            is_fixed = ref is not None
        if ref is None:  # no natural bound: the dense baseline, else the worst value seen
            ref = _dense_value(frames, o.metric)
            if ref is None:
                seen = [v for f in frames if o.metric in f for v in pd.to_numeric(
                    f.loc[f["state"] == "COMPLETE", o.metric], errors="coerce").dropna().tolist()]
                if not seen:
                    return None
                ref = min(seen) if o.maximize else max(seen) * (1 + REFERENCE_MARGIN)
            if o.maximize:  # no natural best either: the best value seen
                best = max(v for f in frames if o.metric in f for v in pd.to_numeric(
                    f.loc[f["state"] == "COMPLETE", o.metric], errors="coerce").dropna().tolist() + [ref])
        reference.append(sign * float(ref))
        ideal.append(sign * float(best))
        fixed.append(bool(is_fixed))
    return Bounds(np.asarray(reference), np.asarray(ideal), tuple(fixed))


def hypervolume_history(frame: pd.DataFrame, objectives: Sequence[Objective],
                        bounds: Bounds | None = None) -> pd.DataFrame:
    """Hypervolume after each COMPLETE trial, in trial-number order.

    Columns: ``number``, ``hypervolume`` (share of the normalised box, see the module doc),
    ``front_size``, and ``hypervolume_fixed`` (share of the fixed box, :func:`fixed_bounds`,
    or of ``bounds`` when given; NaN without one). One reference point for the whole history
    (from all trials), so the curve never falls.
    """
    history = _history(frame, objectives)
    if bounds is None and len(history):
        bounds = fixed_bounds(objectives, frame)
    history["hypervolume_fixed"] = _fixed_history(frame, objectives, bounds) if len(history) else []
    return history


def _fixed_history(frame: pd.DataFrame, objectives: Sequence[Objective], bounds: Bounds | None) -> list[float]:
    complete = frame[frame["state"] == "COMPLETE"].sort_values("number")
    if bounds is None:
        return [math.nan] * len(complete)
    values = complete[[o.metric for o in objectives]].to_numpy(dtype=float)
    maximize = [o.maximize for o in objectives]
    if len(objectives) == 2:
        scaled = (snap_ties(_as_losses(values, maximize)) - bounds.ideal) / (bounds.reference - bounds.ideal)
        return [area for area, _ in hypervolume_sweep(scaled.tolist())]
    out, area = [], 0.0
    front = IncrementalFront(len(objectives))
    losses = snap_ties(_as_losses(values, maximize))
    for k in range(len(values)):
        if np.all(np.isfinite(losses[k])) and front.add(losses[k].tolist()):
            area = hypervolume(values[: k + 1], maximize, bounds.reference, bounds.ideal)
        out.append(area)
    return out


def _history(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    complete = frame[frame["state"] == "COMPLETE"].sort_values("number")
    metrics = [o.metric for o in objectives]
    maximize = [o.maximize for o in objectives]
    values = complete[metrics].to_numpy(dtype=float)
    rows: list[dict[str, Any]] = []
    if len(values) and np.any(np.all(np.isfinite(values), axis=1)):
        reference, ideal = normalisation(values, maximize)
        numbers = complete["number"].astype(int).tolist()
        if len(objectives) == 2:
            scaled = (snap_ties(_as_losses(values, maximize)) - ideal) / (reference - ideal)
            for number, (area, size) in zip(numbers, hypervolume_sweep(scaled.tolist())):
                rows.append({"number": number, "hypervolume": area, "front_size": size})
        else:
            front = IncrementalFront(len(objectives))
            area = 0.0
            losses = snap_ties(_as_losses(values, maximize))
            for k, number in enumerate(numbers):
                if np.all(np.isfinite(losses[k])) and front.add(losses[k].tolist()):
                    area = hypervolume(values[: k + 1], maximize, reference, ideal)
                rows.append({"number": number, "hypervolume": area, "front_size": len(front)})
    return pd.DataFrame(rows, columns=["number", "hypervolume", "front_size"])
