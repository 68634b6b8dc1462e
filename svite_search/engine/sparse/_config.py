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

#: Policies that give a grown weight a fresh optimizer state (and zero that of inactive weights).
RESETTING_POLICIES: frozenset[str] = frozenset({"reset", "calibrated"})

#: Optimizers (module and class name, matched exactly) whose update of one entry reads only that
#: entry's state and gradient. Under them the state of an inactive weight is never read for an
#: active one, so the engines zero it at topology updates only, not after every step. Any other
#: optimizer (LAMB's and LARS's per-tensor trust ratios read the whole update) has it zeroed
#: after every step. A subclass is not matched: it may change the update.
ELEMENTWISE_OPTIMIZERS: frozenset[str] = frozenset({
    "torch.optim.sgd.SGD", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW",
    "torch.optim.rmsprop.RMSprop", "torch.optim.adagrad.Adagrad", "torch.optim.adamax.Adamax",
    "torch.optim.nadam.NAdam", "torch.optim.radam.RAdam", "timm.optim.lion.Lion",
})


def reads_own_state_only(optimizer: object) -> bool:
    """Whether ``optimizer`` updates every entry from that entry's state and gradient alone.

    Why it matters: keeping the state of inactive weights at zero after every step costs two
    passes over the masked weights per step (Adam's two moments), as much again as masking the
    weights. Under an element-wise optimizer it changes nothing an active weight sees, and a
    weight that grows gets its zero state at the update that grows it; so the engines skip the
    per-step pass there (the trained weights are bit-identical, see the engines' tests).
    """
    kind = type(optimizer)
    return f"{kind.__module__}.{kind.__qualname__}" in ELEMENTWISE_OPTIMIZERS


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
            starts the second moment of grown weights at the mean of the surviving ones (under
            an element-wise optimizer, see :func:`reads_own_state_only`, the state of inactive
            weights is zeroed at topology updates, where it could next be read, not after every
            step);
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
