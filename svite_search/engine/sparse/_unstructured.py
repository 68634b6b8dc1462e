"""SViTE: unstructured dynamic sparse training of a ViT (prune by magnitude, grow by gradient).

The sparsifier holds one 0/1 mask per masked weight (see :mod:`._targets`) beside the model, as
``torch.ao.pruning`` sparsifiers do. After every optimizer step it multiplies the weights by
their masks (one fused ``_foreach_mul_`` over precomputed lists), so a pruned weight never comes
back to life whatever the optimizer does (Adam moments, weight decay, momentum). Under
``optimizer_state="reset"`` a weight grows with zero optimizer state; the state of inactive
weights is zeroed at every update, and after every step as well only where the optimizer is not
element-wise (:func:`~._config.reads_own_state_only`), since no other optimizer reads it. On update
iterations it replaces, in every layer that is not fully dense, the ``ceil(dr · nnz)`` active
weights of smallest magnitude by the same number of inactive entries with the largest dense
gradient; new weights start at zero, so each layer keeps exactly its number of active weights.

Gradients are never masked, so ``.grad`` after ``optimizer.step()`` is the dense gradient of the
iteration: growth needs no extra pass. Under DDP the masks agree on every rank by construction:
the initial masks are drawn from a seeded generator that ignores the weights, and every later
decision is a deterministic function of the (identical) weights and all-reduced gradients, so
nothing is broadcast.

Example: a plain PyTorch loop::

    import timm, torch
    from svite_search.engine.sparse import SViTE, SViTEConfig

    model = timm.create_model("deit_tiny_patch16_224", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=epochs * len(loader)))
    for epoch in range(epochs):
        for images, targets in loader:
            loss = torch.nn.functional.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sparsifier.step()  # mask the weights; prune and grow on update iterations
    stats = sparsifier.stats()  # {'density': 0.5, 'fired': ..., 'updates': ..., ...}
    assert abs(stats["density"] - 0.5) < 1e-3  # every layer keeps its number of active weights
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..base import Sparsifier, check_build_order
from ._config import (
    DEFAULT_OPTIMIZER_STATE,
    OPTIMIZER_STATE_POLICIES,
    RESETTING_POLICIES,
    DynamicSparsityConfig,
    reads_own_state_only,
)
from ._distributions import check_density, check_distribution, layer_counts, layer_densities
from ._targets import masked_parameters, tied_weight_names, unwrap

log = logging.getLogger(__name__)

#: Optimizer state entries that hold a running second moment (Adam/AdamW, AMSGrad, RMSprop).
SECOND_MOMENT_KEYS: tuple[str, ...] = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")


@torch.no_grad()
def calibrate_second_moment(state: dict, grown: torch.Tensor, kept: torch.Tensor) -> None:
    """Set the second moment at ``grown`` positions to its mean over the ``kept`` ones.

    ``grown`` and ``kept`` are boolean masks broadcastable to the state tensors. A layer
    without kept entries (or without a second moment, as plain SGD) is left as it is.
    """
    for key in SECOND_MOMENT_KEYS:
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        kept_values = value.masked_select(kept.to(value.device).expand_as(value))
        if kept_values.numel() == 0:
            continue
        value.masked_fill_(grown.to(value.device).expand_as(value), kept_values.mean())


@dataclass(kw_only=True)
class SViTEConfig(DynamicSparsityConfig):
    """Settings of one SViTE run (engine level: plain values, no harness types), checked on
    construction.

    Attributes:
        density: global density of the masked weights, in (0, 1].
        distribution: per-layer spread of that density: ``erk`` | ``er`` | ``uniform``.
        exact_counts: ``True`` gives each layer an exact number of active weights; ``False``
            draws each entry independently (Bernoulli, the authors' code).

    The schedule (``total_steps``, ``update_interval`` or ``updates_per_run``, ``prune_rate``,
    ``prune_rate_min``, ``decay``, ``t_end``), ``optimizer_state`` and ``seed`` are shared with
    S²ViTE: see :class:`~._config.DynamicSparsityConfig`.

    ``SViTEConfig.reference(...)`` gives the authors' code's behaviour.

    Optimizer-state policies and Adam's shared step count. torch's Adam keeps one ``step`` per
    parameter tensor, so a weight grown at step ``t`` shares the bias correction of its layer,
    ``1 - β^t``, which is ≈ 1 late in a run. With zeroed moments its first update is then
    ``lr · (1-β1)·g / sqrt((1-β2)·g²) = lr · (1-β1)/sqrt(1-β2)``, 3.16 · lr at the default
    betas (and up to about 5 · lr over the next steps while the gradient keeps its sign), where
    a fresh Adam's first step is ``lr``. Earlier in a run the bias correction shrinks it: 0.64 ·
    lr at step 40, 2.5 · lr at step 1000. Measured on a tiny ViT, the median first step of a
    grown weight under ``reset`` is about 9 times that of the layer's established weights at
    every stage. ``calibrated`` zeroes the first moment but starts the second at the layer's
    mean, so a grown weight's first steps are ``lr · (1-β1)·g / sqrt(v̄)``: 0.24 · lr late in a
    run in the same measurement, close to its neighbours' 0.35 · lr. ``reset`` stays the
    default because it trained better: on digits (3 seeds, same budget) its mean top-1 was
    higher than ``calibrated``'s and ``keep``'s for both SViTE and S²ViTE. One possible reason,
    not measured: a weight grown from zero is pruned again at the next update unless its
    magnitude catches up, and larger first steps give it that chance. ``calibrated`` is there
    for runs where those first steps destabilise training.
    """

    density: float = 0.5
    distribution: str = "erk"
    exact_counts: bool = True

    @classmethod
    def reference(cls, **fields: Any) -> "SViTEConfig":
        """The reference code's switches: Bernoulli masks and untouched optimizer state."""
        return cls(**{"exact_counts": False, "optimizer_state": "keep", **fields})

    def validate(self) -> None:
        """Raise :class:`~svite_search.errors.ConfigError` naming the first invalid field."""
        check_density(self.density)
        check_distribution(self.distribution)
        super().validate()


class SViTE(Sparsifier):
    """Unstructured dynamic sparsity for a timm ViT; call :meth:`step` after ``optimizer.step()``.

    Args:
        model: the model (a DDP wrapper is looked through; masks use the inner model's names).
        optimizer: the optimizer of ``model`` (its state is reset at grown/inactive weights
            under ``optimizer_state="reset"``); ``None`` when there is no optimizer state.
        config: the run's :class:`SViTEConfig`.

    Attributes:
        masks: parameter name -> 0/1 tensor with the weight's shape, dtype and device.
        schedule: the :class:`PruneSchedule` in use.
        step_count: optimizer steps seen so far.
        updates: topology updates done; ``skipped_updates``: those skipped (non-finite gradients).
    """

    name = "svite"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, config: SViTEConfig) -> None:
        config.validate()
        self.config = config
        self.model = unwrap(model)
        self.optimizer = optimizer
        # Under an element-wise optimizer nothing reads the state of an inactive weight before it
        # grows, and growing zeroes it: the per-step pass over the moments is skipped.
        self._state_read_per_entry = reads_own_state_only(optimizer)
        self.schedule = config.schedule()
        self.params: dict[str, nn.Parameter] = masked_parameters(self.model)
        self._tied: dict[str, str] = tied_weight_names(self.model)
        if not self.params:
            raise ValueError(f"{type(self.model).__name__} has no Linear or Conv2d weights to mask")
        check_build_order(self.model, optimizer, self.params.items())
        shapes = {name: tuple(p.shape) for name, p in self.params.items()}
        self.target_densities: dict[str, float] = layer_densities(shapes, config.density, config.distribution)
        self._generator = torch.Generator().manual_seed(config.seed)
        counts = layer_counts(shapes, self.target_densities) if config.exact_counts else None
        self.masks: dict[str, torch.Tensor] = {}
        for name, param in self.params.items():
            mask = self._draw_mask(param, self.target_densities[name], None if counts is None else counts[name])
            self.masks[name] = mask.to(device=param.device, dtype=param.dtype)
        self.fired: dict[str, torch.Tensor] = {name: m.bool() for name, m in self.masks.items()}
        self.step_count = 0
        self.updates = 0
        self.skipped_updates = 0
        self._refresh()
        self.apply_masks()

    # ------------------------------------------------------------------ set-up

    def _draw_mask(self, param: torch.Tensor, density: float, count: int | None) -> torch.Tensor:
        """A random mask drawn on the CPU from the shared generator (so every rank agrees)."""
        if count is None:
            return (torch.rand(param.shape, generator=self._generator) < density).float()
        flat = torch.zeros(param.numel())
        flat[torch.randperm(param.numel(), generator=self._generator)[:count]] = 1.0
        return flat.view(param.shape)

    def _refresh(self) -> None:
        """Recompute active counts and the lists that the per-step masking iterates over."""
        self._counts = {name: int(m.count_nonzero()) for name, m in self.masks.items()}
        self._sparse_names = [n for n, p in self.params.items() if self._counts[n] < p.numel()]
        self._sparse_params = [self.params[n] for n in self._sparse_names]
        self._sparse_masks = [self.masks[n] for n in self._sparse_names]
        self._fired_count = sum(int(f.count_nonzero()) for f in self.fired.values())
        self._masked_total = sum(p.numel() for p in self.params.values())
        self._params_total = sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------ every step

    def _follow_parameters(self) -> None:
        """Move the masks to the weights' device if the model moved after construction."""
        if self._sparse_params and self._sparse_params[0].device != self._sparse_masks[0].device:
            for name, param in self.params.items():
                self.masks[name] = self.masks[name].to(device=param.device, dtype=param.dtype)
                self.fired[name] = self.fired[name].to(param.device)
            self._refresh()

    def step(self) -> None:
        """Call once after every ``optimizer.step()``: mask weights, update topology when due."""
        self.step_count += 1
        self._follow_parameters()
        self.apply_masks()
        if self.config.optimizer_state in RESETTING_POLICIES and not self._state_read_per_entry:
            self._mask_optimizer_state()
        if self.schedule.is_update_step(self.step_count):
            self.update_topology()

    @torch.no_grad()
    def apply_masks(self, module: nn.Module | None = None) -> None:
        """Zero the inactive weights of the model, or of ``module`` (same names, e.g. an EMA copy)."""
        if module is None:
            params = self._sparse_params
        else:
            named = dict(unwrap(module).named_parameters())
            missing = [n for n in self._sparse_names if n not in named]
            if missing:
                raise KeyError(f"module has no parameter {missing[0]!r} to mask")
            params = [named[n] for n in self._sparse_names]
        if not params:
            return
        masks = self._sparse_masks
        if params[0].device != masks[0].device or params[0].dtype != masks[0].dtype:
            masks = [m.to(device=p.device, dtype=p.dtype) for p, m in zip(params, masks)]
        torch._foreach_mul_(params, masks)

    def _state_tensors(self, params: Iterable[torch.Tensor], masks: Iterable[torch.Tensor]) -> tuple[list, list]:
        """Optimizer state tensors shaped like their parameter (moments, momentum), with masks."""
        tensors: list[torch.Tensor] = []
        paired: list[torch.Tensor] = []
        if self.optimizer is None:
            return tensors, paired
        state = self.optimizer.state
        for param, mask in zip(params, masks):
            for value in state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value is not param:
                    tensors.append(value)
                    paired.append(mask)
        return tensors, paired

    @torch.no_grad()
    def _mask_optimizer_state(self) -> None:
        """Keep the optimizer state of inactive weights at zero (``reset`` policy, after every
        step under an optimizer that is not element-wise: LAMB's trust ratio reads it)."""
        tensors, masks = self._state_tensors(self._sparse_params, self._sparse_masks)
        if tensors:
            torch._foreach_mul_(tensors, masks)

    # ------------------------------------------------------------------ topology update

    @torch.no_grad()
    def update_topology(self, prune_rate: float | None = None) -> bool:
        """Prune and grow every sparse layer once; return False when skipped.

        Uses the weights after this step's optimizer update and the dense gradients still in
        ``.grad``. Skipped (and counted in ``skipped_updates``) when a masked weight has no
        gradient, or when any parameter's gradient (the masked weights' that the update reads
        and every other that the optimizer step applied) is not finite, e.g. an overflowing
        mixed-precision step.
        """
        self._follow_parameters()
        grads = [self.params[n].grad for n in self._sparse_names]
        if any(g is None for g in grads):
            self.skipped_updates += 1
            log.warning("step %d: topology update skipped: a masked weight has no gradient", self.step_count)
            return False
        # Every gradient the optimizer step applied (biases, norms, tokens, dense layers), not only
        # the masked weights' that the update reads: one NaN anywhere means the step was not real.
        checked = [p.grad for p in self.model.parameters() if p.grad is not None]
        if checked and not bool(torch.stack([torch.isfinite(g).all() for g in checked]).all()):
            self.skipped_updates += 1
            log.warning("step %d: topology update skipped: gradients are not finite", self.step_count)
            return False
        rate = self.schedule.prune_rate(self.step_count) if prune_rate is None else prune_rate
        for name, grad in zip(self._sparse_names, grads):
            self._prune_and_grow(name, grad, rate)
        self.apply_masks()
        self._fired_count = sum(int(f.count_nonzero()) for f in self.fired.values())
        self.updates += 1
        return True

    def _prune_and_grow(self, name: str, grad: torch.Tensor, rate: float) -> None:
        param, mask = self.params[name], self.masks[name]
        active = mask.bool().flatten()
        nnz = self._counts[name]
        count = min(math.ceil(rate * nnz), nnz)
        if count == 0:
            return
        # prune: the `count` active weights of smallest magnitude (top-k over active entries only)
        candidates = active.nonzero().squeeze(1)
        magnitude = param.detach().flatten()[candidates].abs()
        pruned = candidates[torch.topk(magnitude, count, largest=False, sorted=False).indices]
        kept = active.clone()
        kept[pruned] = False
        # grow: the `count` inactive entries (just-pruned ones included) of largest |gradient|
        candidates = (~kept).nonzero().squeeze(1)
        growth = grad.detach().flatten()[candidates].abs()
        grown = candidates[torch.topk(growth, count, sorted=False).indices]
        new_active = kept.clone()
        new_active[grown] = True
        # new weights start at zero; one pruned and regrown at once keeps its value
        param.detach().masked_fill_((new_active & ~active).view(param.shape), 0.0)
        if self.config.optimizer_state in RESETTING_POLICIES and self.optimizer is not None:
            survivors = (active & new_active).view(param.shape)
            tensors, masks = self._state_tensors([param], [survivors.to(mask.dtype)])
            for tensor, keep in zip(tensors, masks):
                tensor.mul_(keep)
            if self.config.optimizer_state == "calibrated":
                grown_now = (new_active & ~active).view(param.shape)
                calibrate_second_moment(self.optimizer.state.get(param, {}), grown_now, survivors)
        mask.copy_(new_active.view(mask.shape))
        self.fired[name] |= new_active.view(mask.shape)

    # ------------------------------------------------------------------ read-outs

    def layer_densities(self) -> dict[str, float]:
        """Current density of every masked weight, by parameter name; a weight tied into
        several layers is listed under each of their names (for per-layer MACs)."""
        out = {name: self._counts[name] / p.numel() for name, p in self.params.items()}
        out.update({alias: out[name] for alias, name in self._tied.items()})
        return out

    def stats(self) -> dict[str, float]:
        """Global ``density`` and ``fired`` fraction of the masked weights, ``updates``, and counts.

        ``params_nonzero`` counts the model's parameters that are not masked out (all dense
        parameters plus the active masked weights); ``params_total`` all of them.
        """
        active = sum(self._counts.values())
        return {
            "density": active / self._masked_total,
            "fired": self._fired_count / self._masked_total,
            "updates": float(self.updates),
            "skipped_updates": float(self.skipped_updates),
            "prune_rate": self.schedule.prune_rate(self.step_count),
            "params_nonzero": float(self._params_total - (self._masked_total - active)),
            "params_total": float(self._params_total),
        }

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Masks, fired sets, schedule position, counters and RNG state (resume is exact)."""
        return {
            "masks": {n: m.to(device="cpu", dtype=torch.bool) for n, m in self.masks.items()},
            "fired": {n: f.to("cpu") for n, f in self.fired.items()},
            "step_count": self.step_count,
            "updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "rng_state": self._generator.get_state(),
            "config": dataclasses.asdict(self.config),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a sparsifier built for the same model."""
        names = set(self.masks)
        if set(state["masks"]) != names:
            unknown = sorted(set(state["masks"]) ^ names)
            raise ValueError(f"checkpoint masks do not match the model's masked weights (e.g. {unknown[0]!r})")
        for name, saved in state["masks"].items():
            if tuple(saved.shape) != tuple(self.masks[name].shape):
                raise ValueError(f"checkpoint mask {name!r} has shape {tuple(saved.shape)}, model {tuple(self.masks[name].shape)}")
            self.masks[name].copy_(saved)
            self.fired[name].copy_(state["fired"][name])
        self.step_count = int(state["step_count"])
        self.updates = int(state["updates"])
        self.skipped_updates = int(state.get("skipped_updates", 0))
        self._generator.set_state(state["rng_state"])
        self._refresh()
        self.apply_masks()
