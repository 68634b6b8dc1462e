"""Analytic FLOPs of a (sparse) ViT, counted as multiply-accumulates (MACs), as the paper does.

DeiT's and the paper's "FLOPs" are MACs (DeiT-Small: 4.6 G). Per block with ``N`` tokens, width
``D``, attention width ``a`` (heads kept × head dim) and MLP width ``m`` (neurons kept)::

    weight MACs     N · (3·D·a + a·D + 2·D·m)     each layer scaled by its weight density
    attention       2 · N² · a                    (q·kᵀ and attn·v; always dense)

plus the patch embedding (one ``D × C·p²`` product per patch) and the classifier head (one
pooled token). Norms, softmax, activations and residual additions are not counted (they are not
MACs and DeiT's tables leave them out too). The SViTE+ scorer, a ``Linear(D, 1)`` on every
patch, is counted when tokens are selected.

The architecture is read from the module itself (widths of ``attn.qkv``, ``attn.proj`` and the
MLP linears, ``attn.head_dim``), so a physically slimmed model with different widths per block is
counted as it is. ``torch.utils.flop_counter.FlopCounterMode`` misses fused SDPA attention on
CPU; :mod:`svite_search.metrics._torch_counter` cross-checks this formula with fused attention
switched off.

This module counts what it is given (per-layer densities, tokens, heads and neurons per block)
and imports nothing of the package above it: turning a *setting* (a global density spread by
ERK, S²ViTE's head and neuron shares) into those inputs is the engine's rule, applied by
:func:`svite_search.report.macs.macs_for`.

Example::

    model = meta_model("deit_small_patch16_224")  # shapes only, no memory
    report = vit_macs(model, tokens=186)           # 186 of 196 patches kept, plus cls
    report.dense_gmacs, report.gmacs, report.savings  # 4.60, 4.35, 0.0539
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError, UserInputError
from .wrappers import unwrap

#: Part kinds of :meth:`MacsReport.by_kind`, in forward order.
KINDS: tuple[str, ...] = ("patch_embed", "token_selector", "qkv", "attn_matmul", "proj", "mlp", "head")


@dataclass(frozen=True)
class MacsReport:
    """MACs of one forward pass of one image: effective (sparse) and dense.

    Attributes:
        total: effective MACs with the given densities, tokens and structure.
        dense_total: MACs of the same architecture with every weight, token, head and neuron.
        parts: effective MACs by part (``patch_embed``, ``blocks.3.attn.qkv``,
            ``blocks.3.attn.matmul``, ``blocks.3.mlp.fc1``, ..., ``head``).
        dense_parts: dense MACs by the same parts.
        tokens: tokens per block (prefix tokens plus kept patches); ``dense_tokens`` without
            selection.
        img_size, num_classes: input resolution (height, width) and classes of the model counted.
    """

    total: float
    dense_total: float
    parts: dict[str, float] = field(default_factory=dict)
    dense_parts: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    dense_tokens: int = 0
    img_size: tuple[int, int] | None = None
    num_classes: int | None = None

    @property
    def gmacs(self) -> float:
        return self.total / 1e9

    @property
    def dense_gmacs(self) -> float:
        return self.dense_total / 1e9

    @property
    def savings(self) -> float:
        """Share of the dense MACs saved, in [0, 1]."""
        return 1.0 - self.total / self.dense_total if self.dense_total else 0.0

    def by_kind(self, dense: bool = False) -> dict[str, float]:
        """MACs summed over blocks by kind (:data:`KINDS`)."""
        out = dict.fromkeys(KINDS, 0.0)
        for name, macs in (self.dense_parts if dense else self.parts).items():
            out[_kind(name)] += macs
        return out


def _kind(part: str) -> str:
    if part.endswith("attn.qkv"):
        return "qkv"
    if part.endswith("attn.matmul"):
        return "attn_matmul"
    if part.endswith("attn.proj"):
        return "proj"
    if ".mlp." in part:
        return "mlp"
    return part if part in KINDS else "head"


def _density(layer_density: Mapping[str, float] | None, module_name: str) -> float:
    if not layer_density:
        return 1.0
    for key in (f"{module_name}.weight", module_name):
        if key in layer_density:
            return float(layer_density[key])
    return 1.0


def _linear_macs(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def as_vision_transformer(model: nn.Module) -> nn.Module:
    """The timm VisionTransformer inside ``model`` (wrappers looked through), or a user error."""
    model = unwrap(model)
    if not all(hasattr(model, attr) for attr in ("patch_embed", "blocks", "num_prefix_tokens")):
        raise UserInputError(f"{type(model).__name__} is not a timm VisionTransformer (no patch_embed/blocks)")
    return model


def _block_parts(index: int, block: nn.Module) -> tuple[nn.Linear, nn.Linear, int, int, list[tuple[str, nn.Linear]]]:
    """(qkv, proj, head_dim, mlp width, MLP linears) of one block, or a clear error."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    qkv, proj = getattr(attn, "qkv", None), getattr(attn, "proj", None)
    if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear) or mlp is None:
        raise UserInputError(f"blocks.{index}: only blocks with attn.qkv, attn.proj and mlp are counted")
    heads = int(getattr(attn, "num_heads", 0))
    head_dim = int(getattr(attn, "head_dim", 0)) or (qkv.out_features // 3 // heads if heads else 0)
    linears = [(n, m) for n, m in mlp.named_modules() if isinstance(m, nn.Linear)]
    width = getattr(mlp, "fc2", None)
    hidden = width.in_features if isinstance(width, nn.Linear) else linears[-1][1].in_features
    return qkv, proj, head_dim, hidden, linears


def block_widths(model: nn.Module) -> list[tuple[int, int]]:
    """Per block ``(heads, MLP neurons)`` of a ViT as it stands (a slimmed block its own)."""
    out = []
    for i, block in enumerate(as_vision_transformer(model).blocks):
        qkv, _, head_dim, hidden, _ = _block_parts(i, block)
        out.append((qkv.out_features // 3 // head_dim if head_dim else 0, hidden))
    return out


def vit_macs(
    model: nn.Module,
    *,
    layer_density: Mapping[str, float] | None = None,
    tokens: int | None = None,
    structure: Sequence[tuple[int, int]] | None = None,
) -> MacsReport:
    """Dense and effective MACs of a timm VisionTransformer for one image.

    Args:
        model: a timm ViT (any device, ``meta`` included; wrappers with ``.module`` are seen
            through). Widths are read per block, so slimmed models count correctly.
        layer_density: weight name (``blocks.0.attn.qkv.weight``) -> density; unstructured
            sparsity scales that layer's weight MACs. Missing names are dense.
        tokens: patch tokens kept by the token selector (prefix tokens such as cls are added on
            top); default all patches.
        structure: per block ``(heads_kept, neurons_kept)`` of a masked S²ViTE model.
    """
    model = as_vision_transformer(model)
    blocks = list(model.blocks)
    num_patches = int(model.patch_embed.num_patches)
    prefix = int(model.num_prefix_tokens)
    if tokens is None:
        tokens = num_patches
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= num_patches:
        raise ConfigError("tokens", f"{tokens!r} must be an integer in [1, {num_patches}] (patch tokens kept)")
    if structure is not None and len(structure) != len(blocks):
        raise ConfigError("structure", f"has {len(structure)} entries, the model {len(blocks)} blocks")
    n_dense, n = prefix + num_patches, prefix + tokens
    parts: dict[str, float] = {}
    dense: dict[str, float] = {}

    patch_proj = model.patch_embed.proj
    patch_macs = num_patches * (patch_proj.weight.numel() if hasattr(patch_proj, "weight") else 0)
    dense["patch_embed"] = patch_macs
    parts["patch_embed"] = patch_macs * _density(layer_density, "patch_embed.proj")
    if tokens < num_patches:
        width = int(getattr(model, "embed_dim", blocks[0].attn.qkv.in_features if blocks else 0))
        dense["token_selector"] = 0.0
        parts["token_selector"] = float(num_patches * width)

    for i, block in enumerate(blocks):
        qkv, proj, head_dim, hidden, mlp_linears = _block_parts(i, block)
        attn_width = qkv.out_features // 3
        heads = attn_width // head_dim if head_dim else 0  # a slim block may keep no head
        if structure is None:
            heads_kept, hidden_kept = heads, hidden
        else:
            heads_kept, hidden_kept = (int(v) for v in structure[i])
            if not (0 <= heads_kept <= heads and 0 <= hidden_kept <= hidden):
                raise ConfigError("structure", f"block {i}: ({heads_kept}, {hidden_kept}) exceeds ({heads}, {hidden})")
        attn_kept = heads_kept * head_dim
        attn_share = attn_kept / attn_width if attn_width else 0.0  # 0 heads: the layers are empty
        hidden_share = hidden_kept / hidden if hidden else 0.0  # 0 neurons: likewise
        prefix_name = f"blocks.{i}"
        dense[f"{prefix_name}.attn.qkv"] = n_dense * _linear_macs(qkv)
        parts[f"{prefix_name}.attn.qkv"] = (
            n * _linear_macs(qkv) * attn_share * _density(layer_density, f"{prefix_name}.attn.qkv")
        )
        dense[f"{prefix_name}.attn.matmul"] = 2 * n_dense * n_dense * attn_width
        parts[f"{prefix_name}.attn.matmul"] = 2 * n * n * attn_kept
        dense[f"{prefix_name}.attn.proj"] = n_dense * _linear_macs(proj)
        parts[f"{prefix_name}.attn.proj"] = (
            n * _linear_macs(proj) * attn_share * _density(layer_density, f"{prefix_name}.attn.proj")
        )
        for sub, linear in mlp_linears:
            name = f"{prefix_name}.mlp.{sub}"
            dense[name] = n_dense * _linear_macs(linear)
            parts[name] = n * _linear_macs(linear) * hidden_share * _density(layer_density, name)

    head_macs = _linear_macs(getattr(model, "head", None))
    dense["head"] = head_macs
    parts["head"] = head_macs * _density(layer_density, "head")
    return MacsReport(
        total=float(sum(parts.values())),
        dense_total=float(sum(dense.values())),
        parts={k: float(v) for k, v in parts.items()},
        dense_parts={k: float(v) for k, v in dense.items()},
        tokens=n,
        dense_tokens=n_dense,
        img_size=tuple(int(v) for v in model.patch_embed.img_size) if hasattr(model.patch_embed, "img_size") else None,
        num_classes=getattr(model, "num_classes", None),
    )


# ----------------------------------------------------------------------------- by model name


def meta_model(model_name: str, **create_kwargs: Any) -> nn.Module:
    """A timm model built on the ``meta`` device: shapes only, no weights, no memory."""
    from .._torchvision_guard import ensure_torchvision

    ensure_torchvision()
    import timm

    if not timm.is_model(model_name):
        raise ConfigError(
            "model", f"unknown model {model_name!r} (neither a preset such as vit_digits nor a timm model: see timm.list_models())"
        )
    with torch.device("meta"):
        return timm.create_model(model_name, pretrained=False, **create_kwargs)


def patch_tokens_kept(
    num_patches: int, prefix_tokens: int, keep_tokens: int | None = None, keep_ratio: float | None = None
) -> int:
    """Patch tokens kept, from either all tokens kept (``keep_tokens``, prefix tokens included, as
    in the paper: 187 of 197 keeps 186 patches) or a share of the patches (``keep_ratio``)."""
    if keep_tokens is not None and keep_ratio is not None:
        raise ConfigError("keep_tokens", "give either keep_tokens or keep_ratio, not both")
    if keep_tokens is not None:
        total = num_patches + prefix_tokens
        if isinstance(keep_tokens, bool) or not isinstance(keep_tokens, int) or not prefix_tokens < keep_tokens <= total:
            raise ConfigError(
                "keep_tokens",
                f"{keep_tokens!r} must be in [{prefix_tokens + 1}, {total}] (all tokens, {prefix_tokens} prefix included)",
            )
        return keep_tokens - prefix_tokens
    if keep_ratio is not None:
        if not 0.0 < keep_ratio <= 1.0:
            raise ConfigError("keep_ratio", f"{keep_ratio!r} must be in (0, 1]")
        return max(1, round(keep_ratio * num_patches))
    return num_patches
