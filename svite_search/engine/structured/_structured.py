"""S²ViTE: structured dynamic sparsity over attention heads and MLP neurons.

The component holds one boolean head set and one neuron set per block beside the model, as a
``torch.ao.pruning`` sparsifier holds its masks, and keeps the model masked:

* a head is switched off through its q, k and v rows of ``attn.qkv.weight``. Its q/k/v biases
  stay (as in the reference code), so an inactive head emits the constant ``b_v`` (uniform
  attention over identical values) through ``attn.proj``: a learned bias that the physical
  slimming folds into ``proj.bias``;
* a neuron is switched off through its ``mlp.fc2`` column only (``neuron_growth="signal"``, the
  default). Its ``fc1`` row keeps computing an activation, so the gradient of the fc2 column is a
  real growth signal and neuron sets move during training. ``"reference"`` also zeroes the fc1
  row and bias, as the authors' code did: every inactive neuron then has a zero gradient, only
  the neurons pruned in the same update can come back, and the neuron sets never change.

Each ``step()`` (after ``optimizer.step()``) re-applies the masks, so a pruned unit never comes
back to life between updates. On update iterations of the shared schedule it prunes, per
block, ``ceil(dr · active)`` heads with the lowest Taylor importance and as many neurons with the
lowest weight magnitude, then grows the same numbers with the highest growth signal. Newly
grown weights start at zero; a unit pruned and regrown keeps its weights.

Head exploration (``head_growth``). The head growth signal is ``R_h = mean_b Σ|∂L/∂A_h|``, the
gradient reaching the head's output (see :mod:`._scores`). An active head and an inactive one
do not compete on equal terms under any first-order signal: an inactive head outputs the
constant ``b_v``, so its gradient is ``proj[:, h]ᵀ δ`` through ``proj`` columns that have not
been trained to carry anything, while a head pruned a moment ago still has trained q/k/v rows
and ``proj`` columns. Measured on the digits study (4 blocks of 4 heads, 2 kept, 11 updates,
seed 0), not one update ranked an inactive head above the head just pruned, whether the signal was
``R_h``, the dense gradient of the head's q/k/v rows, of its v rows, or either divided by the
norm of its ``proj`` columns: the pruned heads were always the ones regrown, and the head sets
never moved (the neurons' defect of the authors' code, for heads).

* ``"explore"`` (default): the heads pruned in an update are not candidates for regrowth in that
  update (unless too few other inactive heads are left). The freed slots go to the inactive
  heads with the highest ``R_h``, which ranks them by how well their output direction lines
  up with the gradient at the block output. Every update with a head to prune therefore swaps
  heads, and ``heads_fired`` grows. Neurons need no such rule: their signal already explores.
* ``"reference"``: the heads pruned in an update compete with the inactive ones (the authors'
  rule); the head sets stay as initialised in practice.
* ``"frozen"``: the initial head sets are kept for the whole run (neurons still explore): the
  baseline of an ablation of head exploration.

Example, a plain training loop::

    from svite_search.engine.structured import slim_model

    engine = S2ViTE(model, optimizer, S2ViTEConfig(head_density=0.5, mlp_density=0.5,
                                                   total_steps=len(loader) * epochs))
    for images, labels in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        engine.step()              # before the next zero_grad: updates read the gradients
    slim = slim_model(model, engine)  # the smaller ViT these unit sets describe
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, UserInputError
from ..base import Sparsifier, check_build_order
from ..sparse import (
    OPTIMIZER_STATE_POLICIES,
    RESETTING_POLICIES,
    DynamicSparsityConfig,
    calibrate_second_moment,
    masked_parameters,
    reads_own_state_only,
)
from ._scores import HeadScoreCapture, neuron_growth_signal, neuron_magnitude
from ._units import BlockLayout, BlockMask, block_layouts, random_block_masks, unwrap_model, vit_blocks

log = logging.getLogger(__name__)

NEURON_GROWTH = ("signal", "reference")
HEAD_GROWTH = ("explore", "reference", "frozen")
DEFAULT_HEAD_GROWTH = "explore"  # the default preset's rule; "reference" is the authors'
OPTIMIZER_STATE = OPTIMIZER_STATE_POLICIES  # one list of policies for both engines


@dataclass(kw_only=True)
class S2ViTEConfig(DynamicSparsityConfig):
    """Settings of one S²ViTE run (engine level: plain values), checked on construction.

    ``head_density`` and ``mlp_density`` are the shares of heads and MLP neurons kept per block;
    ``head_growth`` is the head exploration rule (``explore`` | ``reference`` | ``frozen``, see
    the module docstring), ``neuron_growth`` the neuron masking (``signal`` | ``reference``).
    The schedule (``total_steps``, ``update_interval`` or ``updates_per_run``, ``prune_rate``,
    ``prune_rate_min``, ``decay``, ``t_end``), ``optimizer_state`` (the state of grown units)
    and ``seed`` are shared with SViTE: see
    :class:`~svite_search.engine.sparse.DynamicSparsityConfig`.
    """

    head_density: float = 0.7
    mlp_density: float = 0.6
    neuron_growth: str = "signal"
    head_growth: str = DEFAULT_HEAD_GROWTH

    def validate(self) -> None:
        """Raise :class:`~svite_search.errors.ConfigError` naming the first invalid field."""
        for name in ("head_density", "mlp_density"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(name, f"{value!r} must be in (0, 1]")
        if self.head_growth not in HEAD_GROWTH:
            raise ConfigError("head_growth", f"{self.head_growth!r} is not one of {', '.join(HEAD_GROWTH)}")
        if self.neuron_growth not in NEURON_GROWTH:
            raise ConfigError("neuron_growth", f"{self.neuron_growth!r} is not one of {', '.join(NEURON_GROWTH)}")
        super().validate()


class S2ViTE(Sparsifier):
    """Structured head and neuron sparsity for a timm ViT (a :class:`~svite_search.engine.Sparsifier`).

    ``model`` may be wrapped (DDP, ``torch.compile``); masks and hooks act on the timm model
    inside. Build it after the optimizer holds the model's parameters.
    """

    name = "s2vite"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, config: S2ViTEConfig) -> None:
        self.model = unwrap_model(model)
        self.optimizer = optimizer
        # Element-wise optimizers never read an inactive unit's state before it grows, and
        # growing zeroes it: the state is zeroed at updates only (see reads_own_state_only).
        self._state_read_per_entry = reads_own_state_only(optimizer)
        self.config = config
        self.layouts: list[BlockLayout] = block_layouts(self.model)
        config.validate()
        masked = [(f"blocks.{i}.{part}.weight", block.get_submodule(part).weight)
                  for i, block in enumerate(vit_blocks(self.model)) for part in ("attn.qkv", "mlp.fc1", "mlp.fc2")]
        check_build_order(self.model, optimizer, masked)
        self.schedule = config.schedule()
        self._views_cache: dict[tuple[int, torch.device], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.masks: list[BlockMask] = []
        self._set_masks(
            random_block_masks(self.model, config.head_density, config.mlp_density, seed=config.seed)
        )
        self.fired: list[BlockMask] = [m.clone() for m in self.masks]
        self.step_count = 0
        self.updates = 0
        self.skipped_updates = 0
        self.last_changed: tuple[int, int] = (0, 0)  # heads, neurons newly grown at the last update
        self._capture = HeadScoreCapture([b.attn for b in vit_blocks(self.model)])
        self._apply(self.model)
        self._zero_inactive_state(self.masks)
        self._arm_for(self.step_count + 1)

    # -- the protocol --------------------------------------------------------------------------

    def step(self) -> None:
        """Call once after every ``optimizer.step()``: update on schedule, then re-mask."""
        self.step_count += 1
        before = None
        if self.schedule.is_update_step(self.step_count):
            self._apply(self.model)  # new units grow from zero: clear what this step wrote
            before = [m.clone() for m in self.masks]
            self._update()
        self._apply(self.model)
        if self.config.optimizer_state in RESETTING_POLICIES and (before is not None or not self._state_read_per_entry):
            # Inactive positions get zero state; a unit grown now starts from fresh moments
            # (``calibrated``: its second moment from the layer's surviving units).
            keep = self.masks if before is None else [
                BlockMask(b.heads & a.heads, b.neurons & a.neurons) for b, a in zip(before, self.masks)
            ]
            self._zero_inactive_state(keep)
            if before is not None and self.config.optimizer_state == "calibrated":
                grown = [BlockMask(a.heads & ~b.heads, a.neurons & ~b.neurons) for b, a in zip(before, self.masks)]
                self._calibrate_grown_state(keep, grown)
        self._arm_for(self.step_count + 1)

    def state_dict(self) -> dict[str, Any]:
        """Unit sets, the schedule position and the counters: everything an exact resume needs.

        No generator state is kept: the only random draw, the initial unit sets, comes from
        ``config.seed``; every later choice follows from weights, gradients and scores.
        """
        return {
            "step_count": self.step_count,
            "updates": self.updates,
            "skipped_updates": self.skipped_updates,
            "last_changed": list(self.last_changed),
            "update_interval": self.schedule.update_interval,
            "heads": [m.heads.clone() for m in self.masks],
            "neurons": [m.neurons.clone() for m in self.masks],
            "heads_fired": [m.heads.clone() for m in self.fired],
            "neurons_fired": [m.neurons.clone() for m in self.fired],
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        heads, neurons = list(state["heads"]), list(state["neurons"])
        masks = [BlockMask(h.to("cpu", torch.bool), n.to("cpu", torch.bool)) for h, n in zip(heads, neurons)]
        if len(masks) != len(self.layouts) or any(
            m.heads.shape != (l.num_heads,) or m.neurons.shape != (l.mlp_hidden,)
            for m, l in zip(masks, self.layouts)
        ):
            raise UserInputError("S²ViTE state does not fit this model's blocks")
        self._set_masks(masks)
        self.fired = [
            BlockMask(h.to("cpu", torch.bool), n.to("cpu", torch.bool))
            for h, n in zip(state["heads_fired"], state["neurons_fired"])
        ]
        self.step_count = int(state["step_count"])
        self.updates = int(state["updates"])
        self.skipped_updates = int(state["skipped_updates"])
        self.last_changed = tuple(int(x) for x in state.get("last_changed", (0, 0)))  # type: ignore[assignment]
        self._apply(self.model)
        self._arm_for(self.step_count + 1)

    def stats(self) -> dict[str, float]:
        """Counts for logs and results.

        ``density`` is the share of weight-matrix entries (patch embedding, q/k/v, proj, fc1,
        fc2, classifier) the slim model keeps; ``params_nonzero`` / ``params_total`` count all
        parameters of the slim and the dense model. Both therefore ignore the fc1 rows that
        inactive neurons keep training under ``neuron_growth="signal"``: slimming drops them.
        """
        heads_kept = sum(int(m.heads.sum()) for m in self.masks)
        neurons_kept = sum(int(m.neurons.sum()) for m in self.masks)
        heads_total = sum(l.num_heads for l in self.layouts)
        neurons_total = sum(l.mlp_hidden for l in self.layouts)
        weights_total, weights_removed, params_removed = self._removed_counts()
        params_total = sum(p.numel() for p in self.model.parameters())
        return {
            "density": (weights_total - weights_removed) / weights_total,
            "updates": float(self.updates),
            "skipped_updates": float(self.skipped_updates),
            "step": float(self.step_count),
            "prune_rate": self.schedule.prune_rate(self.step_count),
            "heads_kept": float(heads_kept),
            "heads_total": float(heads_total),
            "neurons_kept": float(neurons_kept),
            "neurons_total": float(neurons_total),
            "heads_fired": sum(int(m.heads.sum()) for m in self.fired) / heads_total,
            "neurons_fired": sum(int(m.neurons.sum()) for m in self.fired) / neurons_total,
            "heads_changed": float(self.last_changed[0]),
            "neurons_changed": float(self.last_changed[1]),
            "params_nonzero": float(params_total - params_removed),
            "params_total": float(params_total),
        }

    def structure(self) -> list[tuple[int, int]]:
        """(heads kept, neurons kept) per block."""
        return [m.kept for m in self.masks]

    def needs_eager_step(self) -> bool:
        """True on the iteration before a topology update: the head-score capture hooks
        ``attn.proj``'s input and registers a gradient hook from Python, which a compiled
        graph would not run the same way (one iteration per ΔT)."""
        return self._capture.armed

    def unit_masks(self) -> list[BlockMask]:
        """Copies of the active head and neuron sets per block (for :func:`slim_model`)."""
        return [m.clone() for m in self.masks]

    def apply_masks(self, module: nn.Module | None = None) -> None:
        """Mask another copy of the model with the same blocks (an EMA copy, for example), or
        the model itself."""
        self._apply(self.model if module is None else unwrap_model(module))

    def remove(self) -> None:
        """Unregister the score hooks (the model keeps its current weights)."""
        self._capture.remove()

    # -- masking -------------------------------------------------------------------------------

    def _set_masks(self, masks: list[BlockMask]) -> None:
        self.masks = masks
        self._views_cache.clear()

    def _views(self, module: nn.Module, masks: list[BlockMask]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, boolean mask broadcastable to it) for every masked tensor of ``module``."""
        reference = self.config.neuron_growth == "reference"
        out = []
        for block, layout, mask in zip(vit_blocks(module), self.layouts, masks):
            qkv, fc1, fc2 = block.attn.qkv, block.mlp.fc1, block.mlp.fc2
            device = qkv.weight.device
            rows = mask.heads.to(device).view(1, -1, 1).expand(3, -1, layout.head_dim).reshape(-1)
            out.append((qkv.weight, rows.unsqueeze(1)))
            neurons = mask.neurons.to(fc2.weight.device)
            out.append((fc2.weight, neurons.unsqueeze(0)))
            if reference:
                out.append((fc1.weight, neurons.unsqueeze(1)))
                if fc1.bias is not None:
                    out.append((fc1.bias, neurons))
        return out

    def _current_views(self, module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`_views` of the current masks, cached per module (no host-device copies per step)."""
        key = (id(module), vit_blocks(module)[0].attn.qkv.weight.device)
        if key not in self._views_cache:
            self._views_cache[key] = self._views(module, self.masks)
        return self._views_cache[key]

    @torch.no_grad()
    def _apply(self, module: nn.Module) -> None:
        for param, mask in self._current_views(module):
            param.masked_fill_(~mask, 0.0)

    @torch.no_grad()
    def _zero_inactive_state(self, keep: list[BlockMask]) -> None:
        """Zero the optimizer state (Adam moments, momentum) outside ``keep``."""
        if self.optimizer is None or self.config.optimizer_state not in RESETTING_POLICIES:
            return
        views = self._current_views(self.model) if keep is self.masks else self._views(self.model, keep)
        for param, mask in views:
            state = self.optimizer.state.get(param)
            if not state:
                continue
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(~mask, 0.0)

    @torch.no_grad()
    def _calibrate_grown_state(self, keep: list[BlockMask], grown: list[BlockMask]) -> None:
        """Second moment of the units grown now: the mean over the units kept in the same tensor."""
        if self.optimizer is None:
            return
        for (param, kept), (_, new) in zip(self._views(self.model, keep), self._views(self.model, grown)):
            state = self.optimizer.state.get(param)
            if state:
                calibrate_second_moment(state, new, kept)

    # -- topology updates ----------------------------------------------------------------------

    def _arm_for(self, step: int) -> None:
        """Capture head scores on the iteration that ends with optimizer step ``step``."""
        self._capture.reset()
        if self.schedule.is_update_step(step):
            self._capture.arm()
        else:
            self._capture.disarm()

    def _update(self) -> None:
        taylor, growth = self._capture.scores()
        reference = self.config.neuron_growth == "reference"
        blocks = vit_blocks(self.model)
        magnitude = [neuron_magnitude(b.mlp) for b in blocks]
        signal = [neuron_growth_signal(b.mlp, include_fc1=reference) for b in blocks]
        # What the update reads (scores, MLP weights and gradients) and every gradient the
        # optimizer step applied: one non-finite value anywhere means the step was not real.
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        checked = (*taylor, *growth, *magnitude, *signal, *grads)
        finite = bool(torch.stack([torch.isfinite(t).all().cpu() for t in checked]).all())
        if not finite:
            self.skipped_updates += 1
            log.warning("S²ViTE: skipped the update at step %d (non-finite scores or gradients)", self.step_count)
            return
        rate = self.schedule.prune_rate(self.step_count)
        changed_heads = changed_neurons = 0
        masks = []
        head_growth = self.config.head_growth
        for i, mask in enumerate(self.masks):
            if head_growth == "frozen":
                heads, new_heads = mask.heads.clone(), 0
            else:
                heads, new_heads = prune_and_grow(
                    mask.heads, taylor[i], growth[i], rate, regrow_pruned=head_growth == "reference"
                )
            neurons, new_neurons = prune_and_grow(mask.neurons, magnitude[i], signal[i], rate)
            masks.append(BlockMask(heads, neurons))
            self.fired[i] = BlockMask(self.fired[i].heads | heads, self.fired[i].neurons | neurons)
            changed_heads += new_heads
            changed_neurons += new_neurons
        self._set_masks(masks)
        self.updates += 1
        self.last_changed = (changed_heads, changed_neurons)

    def _removed_counts(self) -> tuple[int, int, int]:
        """(weight-matrix entries in all, of them removed by slimming, parameters removed)."""
        model = self.model
        weights_total = sum(p.numel() for p in masked_parameters(model).values())
        weights_removed = params_removed = 0
        for block, layout, mask in zip(vit_blocks(model), self.layouts, self.masks):
            attn, mlp = block.attn, block.mlp
            d = layout.embed_dim
            off_heads = layout.num_heads - int(mask.heads.sum())
            off_neurons = layout.mlp_hidden - int(mask.neurons.sum())
            head_weights = off_heads * layout.head_dim * (3 * d + attn.proj.out_features)
            neuron_weights = off_neurons * (d + mlp.fc2.out_features)
            weights_removed += head_weights + neuron_weights
            qkv_bias = 3 if attn.qkv.bias is not None else 0
            fc1_bias = 1 if mlp.fc1.bias is not None else 0
            params_removed += head_weights + off_heads * layout.head_dim * qkv_bias
            params_removed += neuron_weights + off_neurons * fc1_bias
        return weights_total, weights_removed, params_removed


def prune_and_grow(
    active: torch.Tensor,
    importance: torch.Tensor,
    growth: torch.Tensor,
    rate: float,
    *,
    regrow_pruned: bool = True,
) -> tuple[torch.Tensor, int]:
    """One prune-then-grow step over the units of one block.

    Deactivates ``r = ceil(rate · active)`` (at least 1) active units with the lowest
    ``importance``, then activates ``r`` inactive units with the highest ``growth``; ties go to
    the lower index. With ``regrow_pruned`` the units just pruned are candidates like any other;
    without it they come after every unit that was inactive before the update, so they return
    only when too few of those are left. Returns the new mask and how many units are active now
    that were not before. A block whose units are all active (density 1) or none is left alone,
    so the count of active units never changes.
    """
    n_active = int(active.sum())
    total = active.numel()
    if n_active == 0 or n_active == total:
        return active.clone(), 0
    r = min(n_active, max(1, math.ceil(rate * n_active)))
    inf = torch.tensor(float("inf"))
    prune_key = torch.where(active, importance.float(), inf)
    pruned = torch.argsort(prune_key, stable=True)[:r]
    after_prune = active.clone()
    after_prune[pruned] = False
    grow_key = torch.where(after_prune, -inf, growth.float())
    if regrow_pruned:
        grown = torch.argsort(grow_key, descending=True, stable=True)[:r]
    else:
        was_inactive = ~active
        order = torch.argsort(grow_key, descending=True, stable=True)
        order = torch.cat([order[was_inactive[order]], order[~was_inactive[order]]])
        grown = order[:r]
    new = after_prune.clone()
    new[grown] = True
    return new, int((new & ~active).sum())
