"""Pareto fronts: dominance with a tolerance for the report, fronts kept as points arrive for
the driver, and the 2-objective hypervolume history in one sweep.

Why a tolerance: a row dominates another when it is no worse in every objective and better in
one by more than the tolerance; values of a column closer than ``ACCURACY_RTOL`` of its largest
magnitude count as equal. Top-1 reaches the Optuna storage as float32 from some code paths and
float64 from others, so one count of correct images (325 of 360) differs with itself in the
eighth digit; one validation image (``100 / n`` points) is orders of magnitude above the
tolerance.

The incremental front (:class:`IncrementalFront`) and the hypervolume sweep compare exactly:
they feed the driver's status line and the hypervolume curve, where a tie changes neither the
area nor anything a user reads. Standard library and numpy only, so the search driver and the
report share one implementation.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Iterable, Sequence

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


def snap_ties(losses: np.ndarray) -> np.ndarray:
    """``losses`` with the values of each column that lie within :func:`tolerances` of their
    neighbour replaced by the smallest of their run, so exact comparisons (the incremental front,
    the hypervolume sweep) see the ties :func:`non_dominated` sees. O(n log n) per column."""
    losses = np.array(losses, dtype=float, copy=True)
    if not len(losses):
        return losses
    finite_rows = np.all(np.isfinite(losses), axis=1)
    tol = tolerances(losses[finite_rows]) if finite_rows.any() else np.zeros(losses.shape[1])
    for c in range(losses.shape[1]):
        rows = np.flatnonzero(np.isfinite(losses[:, c]))
        order = rows[np.argsort(losses[rows, c], kind="stable")]
        column = losses[order, c]
        starts = np.concatenate([[True], np.diff(column) > tol[c]]) if len(column) else np.array([], bool)
        losses[order, c] = column[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
    return losses


def non_dominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (rows with a NaN never are).

    Values of a column closer than :func:`tolerances` compare as equal: a trial is dominated by
    one that is no worse in every objective and better by more than the tolerance in one. Two
    objectives (the usual accuracy-vs-MACs study) take one sort and two prefix minima,
    O(n log n); more objectives compare every pair.
    """
    losses = as_losses(values, maximize)
    finite = np.all(np.isfinite(losses), axis=1)
    mask = np.zeros(len(losses), dtype=bool)
    idx = np.flatnonzero(finite)
    pts = losses[idx]
    if not len(pts):
        return mask
    tol = tolerances(pts)
    if pts.shape[1] == 1:
        mask[idx] = ~(pts[:, 0] > pts[:, 0].min() + tol[0])
        return mask
    if pts.shape[1] == 2:
        mask[idx] = ~_dominated_2d(pts, tol)
        return mask
    for k, i in enumerate(idx):
        no_worse = np.all(pts <= pts[k] + tol, axis=1)
        better = np.any(pts < pts[k] - tol, axis=1)
        mask[i] = not np.any(no_worse & better)
    return mask


def _dominated_2d(pts: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Which 2-objective loss rows another row dominates under ``tol``, in O(n log n).

    ``q`` dominates ``p`` when ``q <= p + tol`` in both columns and ``q < p - tol`` in one. With
    the rows sorted by the first column, the candidates for each case form a prefix: (a)
    ``q.x < p.x - tol.x`` and ``q.y <= p.y + tol.y``; (b) ``q.x <= p.x + tol.x`` and ``q.y < p.y -
    tol.y``. A prefix minimum of the second column answers both.
    """
    order = np.argsort(pts[:, 0], kind="stable")
    xs, ys = pts[order, 0], pts[order, 1]
    prefix_min = np.minimum.accumulate(ys)
    x, y = pts[:, 0], pts[:, 1]
    strict = np.searchsorted(xs, x - tol[0], side="left")  # rows with q.x < p.x - tol
    loose = np.searchsorted(xs, x + tol[0], side="right")  # rows with q.x <= p.x + tol
    best_strict = np.where(strict > 0, prefix_min[np.maximum(strict - 1, 0)], np.inf)
    best_loose = np.where(loose > 0, prefix_min[np.maximum(loose - 1, 0)], np.inf)
    return (best_strict <= y + tol[1]) | (best_loose < y - tol[1])


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` Pareto-dominates ``b`` (all objectives minimised): no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


class IncrementalFront:
    """The non-dominated set of a growing list of points, kept as points arrive.

    All objectives are minimised (negate a maximised one). Identical points are all kept, as
    Optuna's ``best_trials`` keeps trials with equal values. Why: the driver shows the front's
    size after every trial; recomputing it from the whole study costs O(n) (or more) per trial,
    O(n^2) over a study. Here an insert costs O(log n) for one or two objectives (the front is
    kept sorted by the first objective, so the second only falls along it; the points an insert
    dominates are the ones that follow it) and O(front size) for three or more.
    """

    def __init__(self, n_objectives: int) -> None:
        self.n_objectives = int(n_objectives)
        self._points: list[tuple[float, ...]] = []  # 1-2 objectives: sorted by (first, second)
        self._keys: list[tuple[float, ...]] = []     # the same points, for bisect
        self._ids: list[Any] = []

    def __len__(self) -> int:
        return len(self._points)

    @property
    def ids(self) -> list[Any]:
        """The ids given with the points on the front."""
        return list(self._ids)

    @property
    def points(self) -> list[tuple[float, ...]]:
        return list(self._points)

    def add(self, point: Sequence[float], id: Any = None) -> bool:
        """Insert ``point``; returns whether it is on the front (it may push others off)."""
        p = tuple(float(v) for v in point)
        if len(p) != self.n_objectives:
            raise ValueError(f"expected {self.n_objectives} objective values, got {len(p)}")
        if any(math.isnan(v) for v in p):
            return False
        if self.n_objectives > 2:
            return self._add_general(p, id)
        if self.n_objectives == 1:
            p2 = (p[0], 0.0)
        else:
            p2 = p
        # Front sorted by (x, y): x ascending, y strictly descending between distinct points.
        i = bisect.bisect_left(self._keys, p2)
        if i > 0:
            prev = self._keys[i - 1]  # x' <= x; dominates p unless it is p itself
            if prev[1] <= p2[1] and prev != p2:
                return False
        # No later point can dominate p (its x is larger, or equal with a larger y). p dominates the following points whose y is not below its own (x >= x, y >= y, not equal)
        j = i
        while j < len(self._keys) and self._keys[j] == p2:
            j += 1
        k = j
        while k < len(self._keys) and self._keys[k][1] >= p2[1]:
            k += 1
        del self._keys[j:k], self._points[j:k], self._ids[j:k]
        self._keys.insert(i, p2)
        self._points.insert(i, p)
        self._ids.insert(i, id)
        return True

    def _add_general(self, p: tuple[float, ...], id: Any) -> bool:
        if any(_dominates(q, p) for q in self._points):
            return False
        keep = [n for n, q in enumerate(self._points) if not _dominates(p, q)]
        self._points = [self._points[n] for n in keep] + [p]
        self._ids = [self._ids[n] for n in keep] + [id]
        self._keys = list(self._points)
        return True


def brute_force_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (all minimised), by comparing every pair: the
    reference :class:`IncrementalFront` is tested against."""
    return [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]


def hypervolume_sweep(points: Iterable[Sequence[float]]) -> list[tuple[float, int]]:
    """Hypervolume and front size after each of a sequence of 2-objective points, in one sweep.

    ``points`` are losses already scaled so the reference point is (1, 1) (the ideal is usually
    (0, 0)): the hypervolume is the area of ``[0, 1]^2`` (above 1 clipped) that the points seen so
    far dominate. Why: recomputing the front and its hypervolume for every prefix costs O(n^2)
    and more; here each point costs O(log n) amortised, since only a new front point adds area,
    exactly the area between it and the staircase of the front it joins. Returns one
    ``(hypervolume, front size)`` per point.
    """
    front = IncrementalFront(2)
    area = 0.0
    out: list[tuple[float, int]] = []
    for point in points:
        x, y = float(point[0]), float(point[1])
        if not (math.isnan(x) or math.isnan(y)):
            keys = front._keys
            i = bisect.bisect_left(keys, (x, y))
            dominated = i > 0 and keys[i - 1][1] <= y and keys[i - 1] != (x, y)
            if not dominated and x < 1.0 and y < 1.0:
                area += _added_area(keys, i, x, y)
            front.add((x, y))
        out.append((area, len(front)))
    return out


def _added_area(keys: list[tuple[float, ...]], i: int, x: float, y: float) -> float:
    """Area a non-dominated (x, y) adds to the staircase of ``keys`` (sorted, x ascending, y
    descending), ``i`` being its insertion index; everything is clipped to the unit box."""
    level = min(1.0, keys[i - 1][1]) if i > 0 else 1.0  # the staircase's height at x
    added, left = 0.0, x
    j = i
    while j < len(keys) and keys[j][0] < 1.0:
        nx, ny = keys[j]
        if ny <= y:  # the staircase is at or below y from here on
            added += (max(nx, left) - left) * max(level - y, 0.0)
            return added
        right = max(nx, left)
        added += (right - left) * max(level - y, 0.0)
        left, level = right, min(level, ny)
        j += 1
    added += (1.0 - left) * max(level - y, 0.0)
    return added


def hypervolume_exact(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact hypervolume that ``points`` (losses, every objective minimised) dominate up to
    ``reference``: the volume of the union of the boxes ``[p, reference]``.

    Points not strictly better than the reference in every objective add nothing. One objective
    is a length, two a sort and one sweep along the staircase (O(n log n)), more objectives are
    sliced along the last one into lower-dimensional problems (the HSO scheme: exact, O(n^(d-1)
    log n), ample for the fronts of a study). Why our own: the exact algorithm Optuna ships is
    private (``optuna._hypervolume``) and may change with any release.
    """
    ref = tuple(float(r) for r in reference)
    inside = [tuple(float(v) for v in p) for p in points
              if len(p) == len(ref) and all(not math.isnan(float(v)) and float(v) < r for v, r in zip(p, ref))]
    if not ref:
        raise ValueError("reference: expected at least one objective")
    return _hv(inside, ref)


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in points)
    if d == 2:
        area, level = 0.0, ref[1]
        for x, y in sorted(points):  # x ascending: each point adds its strip below the staircase
            if y < level:
                area += (ref[0] - x) * (level - y)
                level = y
        return area
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for k, point in enumerate(ordered):
        top = ordered[k + 1][-1] if k + 1 < len(ordered) else ref[-1]
        depth = top - point[-1]
        if depth > 0:
            volume += depth * _hv([p[:-1] for p in _front_of(ordered[: k + 1])], ref[:-1])
    return volume


def _front_of(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The points of a slice that matter for its lower-dimensional volume (dominance in the
    first d-1 objectives), so each slice works on a front, not on every point below it."""
    cut = [p[:-1] for p in points]
    return [points[i] for i, p in enumerate(cut)
            if not any(_dominates(q, p) for q in cut) and cut.index(p) == i]


def hypervolume_brute_force(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The hypervolume by counting the cells of the grid every point's coordinates span: each
    cell is dominated or not as a whole. O(n^(d+1)); the reference the exact method is tested
    against."""
    import itertools

    ref = [float(r) for r in reference]
    pts = [[float(v) for v in p] for p in points if all(float(v) < r for v, r in zip(p, ref))]
    if not pts:
        return 0.0
    axes = [sorted({p[c] for p in pts} | {ref[c]}) for c in range(len(ref))]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        corner = [axes[c][i] for c, i in enumerate(cell)]
        if any(all(p[c] <= corner[c] for c in range(len(ref))) for p in pts):
            size = 1.0
            for c, i in enumerate(cell):
                size *= axes[c][i + 1] - axes[c][i]
            volume += size
    return volume
