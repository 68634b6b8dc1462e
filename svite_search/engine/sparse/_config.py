"""The settings SViTE and S²ViTE share: the update schedule, the state of grown weights, the seed.

Both engines explore a topology on the same schedule (:class:`~._schedule.PruneSchedule`) and
treat the optimizer state of what they grow the same way, so these fields, their defaults and
their checks are written once, here; :class:`~._unstructured.SViTEConfig` and
:class:`~svite_search.engine.structured.S2ViTEConfig` add their own densities and rules.

Errors name the engine's own arguments (``updates_per_run``, ``decay``); a harness that maps
its config keys onto these arguments adds its own prefix.

Example::

    config = DynamicSparsityConfig(total_steps=1000, update_interval=100)
    assert config.schedule().num_updates == 7  # steps 100 .. 700, before t_end · T = 800
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from ._schedule import PruneSchedule, resolve_update_interval

OPTIMIZER_STATE_POLICIES: tuple[str, ...] = ("reset", "calibrated", "keep")

#: The policy of the default preset: ``reset`` had the higher mean top-1 than ``calibrated`` and
#: ``keep`` in the digits comparison of the ablation report (SViTE and S²ViTE, 3 seeds each).
DEFAULT_OPTIMIZER_STATE = "reset"

#: Policies that keep the optimizer state of inactive weights at zero.
RESETTING_POLICIES: frozenset[str] = frozenset({"reset", "calibrated"})


@dataclass(kw_only=True)
class DynamicSparsityConfig:
    """Schedule and optimizer-state settings of a dynamic-sparsity run (checked on construction).

    Attributes:
        total_steps: optimizer steps in the whole run (``T``); the prune rate anneals over them.
        update_interval: ``ΔT``, optimizer steps between topology updates; or give
            ``updates_per_run`` instead (see :func:`~._schedule.resolve_update_interval`). With
            neither, the paper's cadence of about 80 updates per run.
        prune_rate: ``dr0``, the share of active weights (or units) replaced at the first update.
        prune_rate_min: ``dr_min``, the share at the end of training.
        decay: prune-rate shape over training: ``cosine`` (paper) | ``linear`` | ``constant``.
        t_end: share of training with topology updates; the rest keeps the topology frozen.
        optimizer_state: the optimizer state of a weight when it grows: ``reset`` (default)
            zeroes the state of newly grown and inactive weights; ``calibrated`` does too, then
            starts the second moment of grown weights at the mean of the surviving ones;
            ``keep`` leaves the state alone (the authors' code).
        seed: seed of the initial masks; share it across DDP ranks.
    """

    total_steps: int
    update_interval: int | None = None
    updates_per_run: int | None = None
    prune_rate: float = 0.5
    prune_rate_min: float = 0.005
    decay: str = "cosine"
    t_end: float = 0.8
    optimizer_state: str = DEFAULT_OPTIMIZER_STATE
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~svite_search.errors.ConfigError` naming the first invalid field."""
        if self.optimizer_state not in OPTIMIZER_STATE_POLICIES:
            raise ConfigError(
                "optimizer_state", f"{self.optimizer_state!r} is not one of {', '.join(OPTIMIZER_STATE_POLICIES)}"
            )
        self.schedule()

    def schedule(self) -> PruneSchedule:
        """The update rule and prune-rate schedule these settings describe."""
        interval = resolve_update_interval(self.total_steps, self.t_end, self.update_interval, self.updates_per_run)
        return PruneSchedule(
            total_steps=self.total_steps,
            update_interval=interval,
            t_end=self.t_end,
            initial=self.prune_rate,
            minimum=self.prune_rate_min,
            decay=self.decay,
        )
