"""S²ViTE scores: Taylor head importance, head growth signal, prune-and-grow choices."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.structured import HeadScoreCapture, neuron_growth_signal, prune_and_grow


class HandAttention(nn.Module):
    """Just the part of an attention module the capture reads: heads, width and ``proj``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.num_heads, self.head_dim = 3, 2
        self.proj = nn.Linear(6, 1, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(weight)


def test_taylor_and_growth_on_a_hand_built_case() -> None:
    # L = Σ proj(A) = Σ_{b,n} Σ_c w_c A_{b,n,c}, so G = ∂L/∂A = w for every token and sample.
    w = torch.tensor([[1.0, 1.0, -2.0, 0.5, 3.0, 0.0]])
    attn = HandAttention(w)
    capture = HeadScoreCapture([attn])
    # Two samples, one token each. Head 0 cancels across samples (+4 then -4): the absolute
    # value is taken per sample before the batch mean, so it still scores 4, not 0.
    a = torch.tensor(
        [
            [[2.0, 2.0, 1.0, 1.0, 0.1, 5.0]],
            [[-2.0, -2.0, 0.0, 1.0, 0.1, -5.0]],
        ],
        requires_grad=True,
    )
    attn.proj(a).sum().backward()  # not armed: nothing captured
    assert not capture.captured
    capture.arm()
    attn.proj(a).sum().backward()
    taylor, growth = capture.scores()
    # head 0: |2+2| = 4 and |-2-2| = 4 -> 4; head 1: |-2+0.5| = 1.5, |0+0.5| = 0.5 -> 1.0;
    # head 2: |0.3+0| = 0.3 twice -> 0.3
    assert torch.allclose(taylor[0], torch.tensor([4.0, 1.0, 0.3]))
    # growth: Σ|G| per head = |w| summed over the head's channels, the same for each sample
    assert torch.allclose(growth[0], torch.tensor([2.0, 2.5, 3.0]))
    assert taylor[0].dtype == torch.float32
    # the lowest Taylor score is pruned first, the highest growth signal grown first
    assert int(taylor[0].argmin()) == 2 and int(growth[0].argmax()) == 2


def test_capture_sums_micro_batches_into_one_batch_mean() -> None:
    attn = HandAttention(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    capture = HeadScoreCapture([attn])
    capture.arm()
    for value, count in ((1.0, 1), (4.0, 3)):
        a = torch.full((count, 1, 6), value, requires_grad=True)
        attn.proj(a).sum().backward()
    taylor, _ = capture.scores()
    assert taylor[0][0].item() == pytest.approx((1.0 + 3 * 4.0) / 4)


def test_capture_is_a_no_op_without_gradients_and_when_disarmed() -> None:
    attn = HandAttention(torch.ones(1, 6))
    capture = HeadScoreCapture([attn])
    capture.arm()
    with torch.no_grad():
        attn.proj(torch.ones(2, 1, 6))
    assert not capture.captured
    with pytest.raises(RuntimeError, match="no head scores"):
        capture.scores()
    capture.disarm()
    attn.proj(torch.ones(2, 1, 6, requires_grad=True)).sum().backward()
    assert not capture.captured
    capture.remove()
    capture.arm()
    attn.proj(torch.ones(2, 1, 6, requires_grad=True)).sum().backward()
    assert not capture.captured  # hooks gone


def test_scores_match_between_fused_and_explicit_attention() -> None:
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=3)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    results = []
    for fused in (True, False):
        for block in model.blocks:
            block.attn.fused_attn = fused
        capture = HeadScoreCapture([b.attn for b in model.blocks])
        capture.arm()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        results.append(capture.scores())
        capture.remove()
    (t_fused, g_fused), (t_plain, g_plain) = results
    for a, b in zip(t_fused + g_fused, t_plain + g_plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert all(bool((t > 0).all()) for t in t_fused)


def test_prune_and_grow_picks_lowest_importance_and_highest_signal() -> None:
    active = torch.tensor([True, True, True, True, False, False, False, False])
    importance = torch.tensor([5.0, 0.1, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0])
    growth = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.2, 9.0, 0.1, 0.3])
    new, changed = prune_and_grow(active, importance, growth, rate=0.25)  # ceil(0.25 · 4) = 1
    assert new.tolist() == [True, False, True, True, False, True, False, False]
    assert changed == 1
    # r = ceil(0.5 · 4) = 2: units 1 and 2 pruned; the two highest signals (5, then 7) grown
    new, changed = prune_and_grow(active, importance, growth, rate=0.5)
    assert new.nonzero().flatten().tolist() == [0, 3, 5, 7] and changed == 2


def test_prune_and_grow_regrows_a_pruned_unit_with_the_best_signal() -> None:
    active = torch.tensor([True, True, False])
    new, changed = prune_and_grow(active, torch.tensor([1.0, 2.0, 0.0]), torch.tensor([8.0, 0.0, 1.0]), 0.1)
    assert torch.equal(new, active) and changed == 0  # unit 0 pruned, then regrown


def test_prune_and_grow_keeps_counts_and_leaves_full_blocks_alone() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        active = torch.rand(16, generator=g) < 0.5
        new, _ = prune_and_grow(active, torch.rand(16, generator=g), torch.rand(16, generator=g), 0.4)
        assert int(new.sum()) == int(active.sum())
    full = torch.ones(4, dtype=torch.bool)
    assert torch.equal(prune_and_grow(full, torch.rand(4), torch.rand(4), 0.5)[0], full)


def test_neuron_signal_needs_gradients() -> None:
    mlp = nn.Module()
    mlp.fc1, mlp.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)
    with pytest.raises(RuntimeError, match="before optimizer.zero_grad"):
        neuron_growth_signal(mlp, include_fc1=False)
    mlp.fc2(F.gelu(mlp.fc1(torch.randn(3, 4)))).sum().backward()
    signal = neuron_growth_signal(mlp, include_fc1=True)
    expected = mlp.fc2.weight.grad.abs().sum(0) + mlp.fc1.weight.grad.abs().sum(1)
    assert torch.allclose(signal, expected)
