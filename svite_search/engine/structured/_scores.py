"""Importance and growth scores of heads and neurons.

Heads. ``A`` is the per-head attention output, attention · V, shape
B × N × H × d_h. It is exactly the input of ``attn.proj`` viewed per head, so it is captured by a
forward pre-hook on ``proj``, which works whether timm runs fused SDPA attention or the explicit
softmax. With ``G = ∂L/∂A``:

* Taylor importance (prune the lowest):  ``S_h = mean_b | Σ_{n,j} A·G |``
* growth signal (grow the highest):      ``R_h = mean_b Σ_{n,j} |G|``

Both are only needed on update iterations: the hook is a no-op unless armed, and the trainer's
component arms it for the forward/backward that precedes an update. Scores are accumulated in
fp32 as sums over samples with a sample count, so several micro-batches (gradient accumulation)
and several ranks (``all_reduce`` of sums and counts) give the batch mean of the whole update
iteration.

Neurons. Importance is weight magnitude, ``‖fc1 row i‖₁ + ‖fc2 column i‖₁``; growth is the
gradient magnitude of the weights that connect the neuron (see :func:`neuron_growth_signal`).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle


class HeadScoreCapture:
    """Collect per-head Taylor and growth scores of every block on armed iterations.

    Example::

        capture = HeadScoreCapture([blk.attn for blk in model.blocks])
        capture.arm()
        F.cross_entropy(model(images), targets).backward()
        taylor, growth = capture.scores()     # lists of (H,) fp32 tensors, one per block
        assert len(taylor) == len(model.blocks) and taylor[0].shape == (model.blocks[0].attn.num_heads,)
        capture.reset()
    """

    def __init__(self, attention_modules: list[nn.Module]) -> None:
        self._shapes = [(int(a.num_heads), int(a.head_dim)) for a in attention_modules]
        self._handles: list[RemovableHandle] = [
            a.proj.register_forward_pre_hook(partial(self._on_proj_input, i))
            for i, a in enumerate(attention_modules)
        ]
        self.armed = False
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------------

    def arm(self) -> None:
        """Capture on the following forward passes (until :meth:`disarm`)."""
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def reset(self) -> None:
        """Forget accumulated scores."""
        self._taylor: list[torch.Tensor | None] = [None] * len(self._shapes)
        self._growth: list[torch.Tensor | None] = [None] * len(self._shapes)
        self._count = [0] * len(self._shapes)

    def remove(self) -> None:
        """Unregister the hooks (the model is left as it was)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.armed = False

    # -- hooks ---------------------------------------------------------------------------------

    def _on_proj_input(self, index: int, module: nn.Module, args: tuple) -> None:
        if not self.armed or not torch.is_grad_enabled() or not args:
            return None
        attn_out = args[0]
        if not isinstance(attn_out, torch.Tensor) or not attn_out.requires_grad:
            return None
        attn_out.register_hook(partial(self._on_grad, index, attn_out.detach()))
        return None

    def _on_grad(self, index: int, attn_out: torch.Tensor, grad: torch.Tensor) -> None:
        heads, head_dim = self._shapes[index]
        batch = attn_out.shape[0]
        a = attn_out.reshape(batch, -1, heads, head_dim).float()
        g = grad.reshape(batch, -1, heads, head_dim).float()
        taylor = (a * g).sum(dim=(1, 3)).abs().sum(0)  # Σ_b |Σ_{n,j} A·G|, shape (H,)
        growth = g.abs().sum(dim=(1, 3)).sum(0)  # Σ_b Σ_{n,j} |G|
        if self._taylor[index] is None:
            self._taylor[index], self._growth[index] = taylor, growth
        else:
            self._taylor[index] = self._taylor[index] + taylor
            self._growth[index] = self._growth[index] + growth
        self._count[index] += batch

    # -- results -------------------------------------------------------------------------------

    @property
    def captured(self) -> bool:
        """True when every block has seen at least one backward since the last reset."""
        return all(c > 0 for c in self._count)

    def scores(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(Taylor, growth) per block as fp32 (H,) batch means, summed over ranks first."""
        if not self.captured:
            raise RuntimeError(
                "no head scores were captured: the iteration before a topology update must run "
                "forward and backward with gradients enabled"
            )
        taylor = torch.cat([t for t in self._taylor])  # type: ignore[misc]
        growth = torch.cat([g for g in self._growth])  # type: ignore[misc]
        counts = torch.tensor(
            [c for (h, _), c in zip(self._shapes, self._count) for _ in range(h)],
            dtype=torch.float32,
            device=taylor.device,
        )
        packed = torch.stack([taylor, growth, counts])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        taylor_mean, growth_mean = (packed[:2] / packed[2]).cpu().unbind(0)
        sizes = [h for h, _ in self._shapes]
        return list(taylor_mean.split(sizes)), list(growth_mean.split(sizes))


@torch.no_grad()
def neuron_magnitude(mlp: nn.Module) -> torch.Tensor:
    """``‖fc1 row i‖₁ + ‖fc2 column i‖₁`` per hidden neuron, fp32 on CPU."""
    fc1 = mlp.fc1.weight.detach().float().abs().sum(1)
    fc2 = mlp.fc2.weight.detach().float().abs().sum(0)
    return (fc1 + fc2).cpu()


@torch.no_grad()
def neuron_growth_signal(mlp: nn.Module, *, include_fc1: bool) -> torch.Tensor:
    """Gradient magnitude per hidden neuron, fp32 on CPU.

    ``‖∂L/∂fc2[:, i]‖₁``, plus ``‖∂L/∂fc1[i]‖₁`` when ``include_fc1`` (the reference code's
    score). The fc2 column's gradient is ``Σ δ · h_i``: it is non-zero for an inactive neuron
    exactly when that neuron still computes an activation ``h_i``, which the default masking
    arranges (only the fc2 column is masked).
    """
    g2 = mlp.fc2.weight.grad
    g1 = mlp.fc1.weight.grad
    if g2 is None or (include_fc1 and g1 is None):
        raise RuntimeError(
            "MLP weights have no gradient at a topology update: call step() after "
            "optimizer.step() and before optimizer.zero_grad()"
        )
    signal = g2.detach().float().abs().sum(0)
    if include_fc1:
        signal = signal + g1.detach().float().abs().sum(1)  # type: ignore[union-attr]
    return signal.cpu()
