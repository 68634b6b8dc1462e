"""Pareto dominance with a tolerance, shared by every place that computes a front.

A row dominates another when it is no worse in every objective and better in one by more than
the tolerance: values of a column closer than ``ACCURACY_RTOL`` of its largest magnitude count
as equal. Top-1 reaches the Optuna storage as float32 from some code paths and float64 from
others, so one count of correct images (325 of 360) differs with itself in the eighth digit;
one validation image (``100 / n`` points) is orders of magnitude above the tolerance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Values of one objective closer than this share of its largest magnitude count as equal.
ACCURACY_RTOL = 1e-6


def as_losses(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Objective values turned into losses (every column minimised)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(maximize):
        raise ValueError(f"values: expected shape (n, {len(maximize)}), got {values.shape}")
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    return values * signs


def tolerances(values: np.ndarray) -> np.ndarray:
    """Per-column tolerance: :data:`ACCURACY_RTOL` of the column's largest finite magnitude.

    Top-1 reaches the storage as float32 from some code paths and float64 from others, so the
    same count of correct images (325 of 360) can differ in the eighth digit; one validation
    image is a difference of ``100 / n`` points, many orders of magnitude above the tolerance.
    """
    values = np.asarray(values, dtype=float)
    finite = np.where(np.isfinite(values), np.abs(values), 0.0)
    scale = finite.max(axis=0) if len(values) else np.zeros(values.shape[1])
    return ACCURACY_RTOL * np.maximum(scale, 1e-300)


def non_dominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (rows with a NaN never are).

    Values of a column closer than :func:`tolerances` compare as equal: a trial is dominated by
    one that is no worse in every objective and better by more than the tolerance in one.
    """
    losses = as_losses(values, maximize)
    finite = np.all(np.isfinite(losses), axis=1)
    mask = np.zeros(len(losses), dtype=bool)
    idx = np.flatnonzero(finite)
    pts = losses[idx]
    tol = tolerances(pts) if len(pts) else np.zeros(losses.shape[1])
    for k, i in enumerate(idx):
        no_worse = np.all(pts <= pts[k] + tol, axis=1)
        better = np.any(pts < pts[k] - tol, axis=1)
        mask[i] = not np.any(no_worse & better)
    return mask
