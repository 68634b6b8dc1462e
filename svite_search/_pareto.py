"""Pareto fronts kept as points arrive, and the 2-objective hypervolume history in one sweep.

Standard library only, so the search driver (for its status line) and the report (for its
front and hypervolume curve) share one implementation. Every objective is minimised here
(negate a maximised one). A point is on the front when no other point is at least as good in
every objective and strictly better in one; identical points are all kept.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Iterable, Sequence


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
