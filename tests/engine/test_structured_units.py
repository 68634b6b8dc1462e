"""S²ViTE units: budgets per block and seeded initial sets."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.structured import (
    block_layouts,
    masks_from_weights,
    random_block_masks,
    structured_budgets,
    unit_budget,
)
from svite_search.errors import UserInputError


def tiny_vit(**kw) -> VisionTransformer:
    args = dict(img_size=16, patch_size=4, embed_dim=48, depth=3, num_heads=6, mlp_ratio=2.0, num_classes=4)
    args.update(kw)
    return VisionTransformer(**args)


@pytest.mark.parametrize(
    "total, density, expected",
    [
        (6, 0.7, 4),  # DeiT-Small heads at 0.7
        (1536, 0.6, 921),  # DeiT-Small neurons at 0.6
        (6, 0.5, 3),
        (10, 0.7, 7),
        (90, 0.7, 63),  # 62.99999999999999 in floating point
        (100, 0.29, 29),  # 28.999999999999996 in floating point
        (6, 0.1, 1),  # never fewer than one unit
        (6, 1.0, 6),
    ],
)
def test_unit_budget(total: int, density: float, expected: int) -> None:
    assert unit_budget(total, density) == expected


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_unit_budget_rejects_out_of_range(density: float) -> None:
    with pytest.raises(UserInputError):
        unit_budget(6, density)


def test_deit_small_budgets_on_meta_device() -> None:
    with torch.device("meta"):
        model = VisionTransformer(embed_dim=384, depth=12, num_heads=6)
    assert structured_budgets(model, 0.7, 0.6) == [(4, 921)] * 12
    assert structured_budgets(model, 0.5, 0.5) == [(3, 768)] * 12


def test_layouts_read_from_the_modules() -> None:
    layouts = block_layouts(tiny_vit())
    assert [(l.num_heads, l.head_dim, l.mlp_hidden, l.embed_dim) for l in layouts] == [(6, 8, 96, 48)] * 3


def test_initial_sets_are_seeded_exact_and_differ_between_blocks() -> None:
    model = tiny_vit()
    a = random_block_masks(model, 0.5, 0.25, seed=3)
    b = random_block_masks(model, 0.5, 0.25, seed=3)
    c = random_block_masks(model, 0.5, 0.25, seed=4)
    for ma, mb in zip(a, b):  # the same on every rank: derived from the seed only
        assert torch.equal(ma.heads, mb.heads) and torch.equal(ma.neurons, mb.neurons)
    assert all(m.kept == (3, 24) for m in a)
    assert any(not torch.equal(x.neurons, y.neurons) for x, y in zip(a, c))
    assert len({tuple(m.neurons.nonzero().flatten().tolist()) for m in a}) > 1


def test_masks_read_back_from_zeroed_weights() -> None:
    model = tiny_vit()
    masks = random_block_masks(model, 0.5, 0.5, seed=0)
    with torch.no_grad():
        for block, mask in zip(model.blocks, masks):
            block.attn.qkv.weight.view(3, 6, 8, 48)[:, ~mask.heads] = 0
            block.mlp.fc2.weight[:, ~mask.neurons] = 0
    for read, mask in zip(masks_from_weights(model), masks):
        assert torch.equal(read.heads, mask.heads) and torch.equal(read.neurons, mask.neurons)


def test_non_vit_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="blocks"):
        block_layouts(torch.nn.Linear(3, 3))


def test_budgets_round_float_products_as_the_comment_says() -> None:
    """The products the budget's epsilon exists for fall just below the integer in floating
    point; the budget is the integer."""
    from svite_search.engine.structured import unit_budget

    assert 90 * 0.7 < 63 and 100 * 0.29 < 29
    assert unit_budget(90, 0.7) == 63 and unit_budget(100, 0.29) == 29
