"""The units S²ViTE switches on and off: attention heads and MLP neurons, per block.

A unit set is a boolean vector per block (``True`` = active). Budgets are uniform over blocks,
``int(H · head_density)`` heads and ``int(M · mlp_density)`` neurons (DeiT-Small at (0.7, 0.6):
4 of 6 heads, 921 of 1536 neurons), never fewer than one so that every block keeps a working
attention and MLP. Initial sets are drawn from a seeded generator, so every rank of a
distributed run draws the same ones.

The layout of a timm ViT is read from the modules themselves (``attn.num_heads``,
``attn.head_dim``, ``mlp.fc1.out_features``) rather than from a config, so a model built with any
overrides is handled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UserInputError
from ..sparse._targets import unwrap as unwrap_model  # one definition of "the model inside wrappers"

#: Added before flooring a budget, so that 90 · 0.7 = 62.99999999999999 and 100 · 0.29 =
#: 28.999999999999996 give the counts a person would write down (63 and 29), not one less.
_BUDGET_EPS = 1e-9


@dataclass(frozen=True)
class BlockLayout:
    """Shape of one transformer block as S²ViTE sees it."""

    index: int
    num_heads: int
    head_dim: int
    mlp_hidden: int
    embed_dim: int


@dataclass
class BlockMask:
    """Active units of one block: ``heads`` (H,) and ``neurons`` (M,), boolean."""

    heads: torch.Tensor
    neurons: torch.Tensor

    def clone(self) -> "BlockMask":
        return BlockMask(self.heads.clone(), self.neurons.clone())

    @property
    def kept(self) -> tuple[int, int]:
        """(heads kept, neurons kept)."""
        return int(self.heads.sum()), int(self.neurons.sum())


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a timm ViT, checked to have the parts S²ViTE works on."""
    inner = unwrap_model(model)
    blocks = getattr(inner, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise UserInputError(
            f"{type(inner).__name__} has no `blocks`: S²ViTE needs a timm VisionTransformer"
        )
    for i, block in enumerate(blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        ok = (
            attn is not None
            and mlp is not None
            and isinstance(getattr(attn, "qkv", None), nn.Linear)
            and isinstance(getattr(attn, "proj", None), nn.Linear)
            and hasattr(attn, "num_heads")
            and hasattr(attn, "head_dim")
            and isinstance(getattr(mlp, "fc1", None), nn.Linear)
            and isinstance(getattr(mlp, "fc2", None), nn.Linear)
            and mlp.fc1.out_features == mlp.fc2.in_features
        )
        if not ok:
            raise UserInputError(
                f"blocks.{i} is not a standard ViT block (fused attn.qkv/attn.proj and an "
                "mlp.fc1/mlp.fc2 pair); S²ViTE supports timm VisionTransformer blocks"
            )
        if attn.qkv.out_features != 3 * attn.num_heads * attn.head_dim:
            raise UserInputError(f"blocks.{i}.attn.qkv does not hold 3 x heads x head_dim rows")
    return list(blocks)


def block_layouts(model: nn.Module) -> list[BlockLayout]:
    """Per-block head count, head width, MLP width and embedding width."""
    return [
        BlockLayout(
            index=i,
            num_heads=int(b.attn.num_heads),
            head_dim=int(b.attn.head_dim),
            mlp_hidden=int(b.mlp.fc1.out_features),
            embed_dim=int(b.attn.qkv.in_features),
        )
        for i, b in enumerate(vit_blocks(model))
    ]


def unit_budget(total: int, density: float) -> int:
    """Units kept out of ``total`` at ``density``: ``int(total · density)``, at least 1."""
    if not 0.0 < density <= 1.0:
        raise UserInputError(f"density {density!r} must be in (0, 1]")
    return max(1, min(total, int(math.floor(total * density + _BUDGET_EPS))))


def structured_budgets(
    model: nn.Module, head_density: float, mlp_density: float
) -> list[tuple[int, int]]:
    """(heads kept, neurons kept) per block, e.g. for ``vit_macs(model, structure=...)``."""
    return [
        (unit_budget(b.num_heads, head_density), unit_budget(b.mlp_hidden, mlp_density))
        for b in block_layouts(model)
    ]


def random_active(total: int, kept: int, generator: torch.Generator) -> torch.Tensor:
    """A boolean vector of length ``total`` with exactly ``kept`` entries set, at random."""
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.randperm(total, generator=generator)[:kept]] = True
    return mask


def random_block_masks(
    model: nn.Module, head_density: float, mlp_density: float, *, seed: int = 0
) -> list[BlockMask]:
    """Seeded random initial unit sets at the given densities (identical on every rank)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        BlockMask(
            heads=random_active(b.num_heads, unit_budget(b.num_heads, head_density), generator),
            neurons=random_active(b.mlp_hidden, unit_budget(b.mlp_hidden, mlp_density), generator),
        )
        for b in block_layouts(model)
    ]


def check_block_masks(model: nn.Module, masks: list[BlockMask]) -> None:
    """Raise :class:`UserInputError` unless ``masks`` fit the blocks of ``model``."""
    layouts = block_layouts(model)
    if len(masks) != len(layouts):
        raise UserInputError(f"{len(masks)} block masks for a model with {len(layouts)} blocks")
    for layout, mask in zip(layouts, masks):
        if tuple(mask.heads.shape) != (layout.num_heads,) or mask.heads.dtype != torch.bool:
            raise UserInputError(
                f"blocks.{layout.index}: head mask must be bool of shape ({layout.num_heads},)"
            )
        if tuple(mask.neurons.shape) != (layout.mlp_hidden,) or mask.neurons.dtype != torch.bool:
            raise UserInputError(
                f"blocks.{layout.index}: neuron mask must be bool of shape ({layout.mlp_hidden},)"
            )


@torch.no_grad()
def masks_from_weights(model: nn.Module) -> list[BlockMask]:
    """Read the active units off a masked model: a head is active when any of its q/k/v rows
    is non-zero, a neuron when its ``fc2`` column is non-zero (both masking modes zero it)."""
    masks = []
    for block in vit_blocks(model):
        attn, mlp = block.attn, block.mlp
        qkv = attn.qkv.weight.detach().reshape(3, attn.num_heads, attn.head_dim, -1)
        heads = qkv.ne(0).flatten(2).any(-1).any(0).cpu()
        neurons = mlp.fc2.weight.detach().ne(0).any(0).cpu()
        masks.append(BlockMask(heads=heads, neurons=neurons))
    return masks
