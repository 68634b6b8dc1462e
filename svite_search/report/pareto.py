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
history are kept in one sweep over the trials (O(n log n)); with more, Optuna's exact
hypervolume (WFG) does the counting, once per trial that joins the front.

Example::

    mask = non_dominated(frame[["top1", "gmacs"]].to_numpy(), [True, False])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..metrics.pareto import (ACCURACY_RTOL, IncrementalFront, as_losses as _as_losses, hypervolume_sweep,
                              non_dominated, snap_ties, tolerances)
from ._frame import Objective

__all__ = ["ACCURACY_RTOL", "non_dominated", "tolerances", "pareto_mask", "normalisation", "hypervolume",
           "hypervolume_history"]

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
    from optuna._hypervolume import compute_hypervolume  # exact (WFG); Optuna has no public name for it

    losses = _as_losses(values, maximize)
    losses = losses[np.all(np.isfinite(losses), axis=1)]
    scale = reference - ideal
    scaled = (losses - ideal) / scale
    inside = scaled[np.all(scaled < 1.0, axis=1)]  # a point beyond the reference adds nothing
    if not len(inside):
        return 0.0
    return float(compute_hypervolume(inside, np.ones(len(maximize))))


def hypervolume_history(frame: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Hypervolume after each COMPLETE trial, in trial-number order.

    Columns: ``number``, ``hypervolume`` (share of the normalised box, see the module doc),
    ``front_size``. One reference point for the whole history (from all trials), so the
    curve never falls.
    """
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
