"""Gumbel top-k with a straight-through gradient: the selection rule of SViTE+.

The forward pass must make a *hard* choice (exactly ``k`` tokens survive, so the blocks can
run on fewer tokens), yet the scorer that ranks the tokens must still learn. The Gumbel trick
does both: perturbing the log-probabilities with Gumbel noise turns top-k into a sample of k
tokens without replacement, and the gradient is borrowed from the tempered softmax of the
same perturbed scores (``hard + soft - soft.detach()``: the value is the hard 0/1 choice, the
derivative is the softmax's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gumbel_noise_like(logits: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise shaped like ``logits``, drawn from torch's global RNG.

    The uniform draw is clamped away from 0 and 1 so the double log is always finite (the
    authors' code re-drew the whole tensor whenever an inf appeared). Using the global RNG
    means a checkpoint that saves torch's RNG state resumes with the same noise.
    """
    finfo = torch.finfo(logits.dtype)
    uniform = torch.rand_like(logits).clamp_(min=finfo.tiny, max=1.0 - finfo.eps)
    return -torch.log(-torch.log(uniform))


def topk_sorted(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries per row, in ascending index order.

    Sorting keeps the surviving tokens in their original spatial order, which makes the
    gathered sequence a sub-sequence of the input (and makes debugging and visualising easy).
    """
    return values.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values


def hard_mask(indices: torch.Tensor, num_tokens: int, dtype: torch.dtype) -> torch.Tensor:
    """A 0/1 mask of shape ``(B, num_tokens)`` with ones at ``indices`` (shape ``(B, k)``)."""
    mask = torch.zeros(indices.shape[0], num_tokens, dtype=dtype, device=indices.device)
    return mask.scatter_(1, indices, 1.0)


def gumbel_topk(
    scores: torch.Tensor, k: int, tau: float, *, noise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select ``k`` of ``N`` tokens per sample from ``scores`` (shape ``(B, N)``).

    Returns ``(indices, gate)``: ``indices`` (``(B, k)``, ascending) are the kept tokens and
    ``gate`` (``(B, N)``, float32) is the straight-through selection, exactly 1.0 at kept and
    0.0 at dropped positions in value, whose gradient is that of
    ``softmax((log_softmax(scores) + g) / tau)``. With ``noise=False`` the choice is the
    plain top-k of the scores (``g = 0``), which is deterministic.

    Example::

        >>> scores = torch.randn(2, 16, requires_grad=True)
        >>> idx, gate = gumbel_topk(scores, 4, tau=1.0)
        >>> idx.shape, float(gate.detach().sum())
        (torch.Size([2, 4]), 8.0)
    """
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k={k} must be between 1 and the number of tokens {scores.shape[-1]}")
    if tau <= 0:
        raise ValueError(f"temperature tau={tau} must be > 0")
    log_probs = F.log_softmax(scores.float(), dim=-1)
    perturbed = log_probs + gumbel_noise_like(log_probs) if noise else log_probs
    indices = topk_sorted(perturbed.detach(), k)
    hard = hard_mask(indices, scores.shape[-1], log_probs.dtype)
    soft = F.softmax(perturbed / tau, dim=-1)
    # hard + (soft - soft.detach()) is exactly `hard` in value (the bracket is exactly 0),
    # unlike the usual hard - soft.detach() + soft, which can round 1.0 to 0.99999994.
    return indices, hard + (soft - soft.detach())
