"""When topology updates run, and how much they prune: shared by SViTE and S²ViTE.

With ``T`` total iterations and interval ``ΔT``, an update (prune then grow) runs after
optimizer step ``t`` (counted from 1) when ``t % ΔT == 0`` and ``t < t_end · T``: the last
``1 − t_end`` of training keeps a frozen topology. The prune ("death") rate decays over **all**
``T`` iterations from ``dr0`` to ``dr_min``:

* cosine:   ``dr(t) = dr_min + (dr0 − dr_min) · (1 + cos(π t / T)) / 2`` (the paper's)
* linear:   ``dr(t) = dr0 − (dr0 − dr_min) · t / T``
* constant: ``dr(t) = dr0``

The paper updates about 80 times per run (DeiT-Small: ΔT = 15000 of 1.5 M iterations at
t_end = 0.8); :func:`resolve_update_interval` turns "updates per run" into ``ΔT`` so that this
cadence survives a change of batch size or epochs.

Example::

    schedule = PruneSchedule(total_steps=1000, update_interval=100)
    assert [t for t in range(1, 1001) if schedule.is_update_step(t)] == [100, 200, 300, 400, 500, 600, 700]
    assert round(schedule.prune_rate(500), 4) == 0.2525  # cosine, halfway between 0.5 and 0.005
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import ConfigError

#: Prune-rate decay shapes understood by :func:`prune_rate`.
DECAYS: tuple[str, ...] = ("cosine", "linear", "constant")

#: The paper's cadence: about this many topology updates in a whole run.
PAPER_UPDATES_PER_RUN = 80


def prune_rate(step: int, total_steps: int, initial: float, minimum: float, decay: str = "cosine") -> float:
    """The prune rate after ``step`` of ``total_steps`` iterations (steps past the end clamp)."""
    if decay not in DECAYS:
        raise ConfigError("decay", f"{decay!r} is not one of {', '.join(DECAYS)}")
    progress = min(max(step, 0), total_steps) / total_steps
    if decay == "cosine":
        return minimum + (initial - minimum) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if decay == "linear":
        return initial - (initial - minimum) * progress
    return initial


def _multiples_below(limit: float, interval: int) -> int:
    """How many ``k >= 1`` have ``k · interval < limit`` (exact, whatever the float rounding)."""
    k = max(int(limit // interval), 0)
    while k > 0 and k * interval >= limit:
        k -= 1
    while (k + 1) * interval < limit:
        k += 1
    return k


def count_updates(total_steps: int, t_end: float, update_interval: int) -> int:
    """How many steps ``t`` in ``1..total_steps`` satisfy the update rule."""
    return _multiples_below(t_end * total_steps, update_interval)


def resolve_update_interval(
    total_steps: int,
    t_end: float,
    update_interval: int | None = None,
    updates_per_run: int | None = None,
) -> int:
    """``ΔT`` in iterations, given either itself or the number of updates wanted in the run.

    For ``updates_per_run = U`` this is the ``ΔT`` that yields ``U`` updates before
    ``t_end · total_steps`` (the nearest count when no integer interval gives exactly ``U``).
    With neither given, the paper's cadence (:data:`PAPER_UPDATES_PER_RUN` updates, or one per
    step when the run is shorter than that).
    """
    if total_steps < 1:
        raise ConfigError("total_steps", f"{total_steps!r} must be >= 1")
    if not 0.0 < t_end <= 1.0:
        raise ConfigError("t_end", f"{t_end!r} must be in (0, 1]")
    if update_interval is not None and updates_per_run is not None:
        raise ConfigError("updates_per_run", "give either update_interval or updates_per_run, not both")
    if update_interval is not None:
        if update_interval < 1:
            raise ConfigError("update_interval", f"{update_interval!r} must be >= 1")
        return int(update_interval)
    window = t_end * total_steps  # updates run at steps strictly below this
    if updates_per_run is None:
        return _interval_for(window, PAPER_UPDATES_PER_RUN)
    if updates_per_run < 1:
        raise ConfigError("updates_per_run", f"{updates_per_run!r} must be >= 1")
    if _multiples_below(window, 1) < updates_per_run:
        raise ConfigError(
            "updates_per_run",
            f"{updates_per_run} updates do not fit before step {window:g} (t_end · total_steps)",
        )
    return _interval_for(window, updates_per_run)


def _interval_for(window: float, updates: int) -> int:
    """The ``ΔT`` whose number of updates below ``window`` is closest to ``updates``.

    Exactly ``updates`` whenever an integer interval allows it (an ``ΔT`` in
    ``[window / (updates + 1), window / updates)``); ties go to the longer interval.
    """
    low = max(int(window // (updates + 1)), 1)
    high = max(math.ceil(window / updates), 1)
    candidates = range(low, high + 1)
    return min(candidates, key=lambda dt: (abs(_multiples_below(window, dt) - updates), -dt))


@dataclass(frozen=True)
class PruneSchedule:
    """The update rule and prune rate of one run; the single place both are defined.

    S²ViTE uses it as SViTE does: ``is_update_step(t)`` after optimizer step ``t`` (from 1), and
    ``prune_rate(t)`` for the fraction of active weights (or units) to replace at that update.
    """

    total_steps: int
    update_interval: int
    t_end: float = 0.8
    initial: float = 0.5
    minimum: float = 0.005
    decay: str = "cosine"

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ConfigError("total_steps", f"{self.total_steps!r} must be >= 1")
        if self.update_interval < 1:
            raise ConfigError("update_interval", f"{self.update_interval!r} must be >= 1")
        if not 0.0 < self.t_end <= 1.0:
            raise ConfigError("t_end", f"{self.t_end!r} must be in (0, 1]")
        if not 0.0 < self.initial <= 1.0:
            raise ConfigError("prune_rate", f"{self.initial!r} must be in (0, 1]")
        if not 0.0 <= self.minimum <= self.initial:
            raise ConfigError("prune_rate_min", f"{self.minimum!r} must be in [0, prune_rate]")
        if self.decay not in DECAYS:
            raise ConfigError("decay", f"{self.decay!r} is not one of {', '.join(DECAYS)}")

    def is_update_step(self, step: int) -> bool:
        """True when a topology update runs after optimizer step ``step`` (counted from 1)."""
        return step > 0 and step % self.update_interval == 0 and step < self.t_end * self.total_steps

    def prune_rate(self, step: int) -> float:
        """The prune rate at ``step``."""
        return prune_rate(step, self.total_steps, self.initial, self.minimum, self.decay)

    @property
    def num_updates(self) -> int:
        """Topology updates in the whole run."""
        return count_updates(self.total_steps, self.t_end, self.update_interval)
