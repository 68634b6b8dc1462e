"""MACs of a named model under a sparsity setting: the engine's rules fed to the analytic count.

:func:`svite_search.metrics.flops.vit_macs` counts a model with given per-layer densities,
tokens and per-block structure. A *setting* names those the way a user does: a global weight
density spread over the layers (SViTE's ERK, with the exact per-layer counts the engine's masks
hold), shares of heads and neurons kept (S²ViTE's per-block budget) and tokens kept (SViTE+).
This module applies the engine's rules to turn one into the other, on a ``meta``-device model
(shapes only), for the ``flops`` command and the paper's table alike.

Example::

    report = macs_for("deit_small_patch16_224", density=0.5, keep_tokens=187)
    report.dense_gmacs, report.gmacs, report.savings  # 4.60, 2.33, 0.4924

(The paper reports a 49.32 % saving for this setting; this count, with ERK's exact per-layer
counts, gives 49.24 %.)
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Hashable

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch.nn as nn

    from ..metrics.flops import MacsReport

__all__ = ["layer_density_for", "macs_for", "shape_model", "structure_for"]


def shape_model(model_name: str, **create_kwargs: Any) -> "nn.Module":
    """The ViT ``timm.create_model(model_name, **create_kwargs)`` builds, on the ``meta`` device
    (shapes only). Built once per name and arguments: callers only read it."""
    try:
        key = tuple(sorted(create_kwargs.items()))
        hash(key)
    except TypeError:  # an unhashable argument: build without the cache
        return _build_shape_model(model_name, create_kwargs)
    return _cached_shape_model(model_name, key)


@lru_cache(maxsize=16)
def _cached_shape_model(model_name: str, key: tuple[tuple[str, Hashable], ...]) -> "nn.Module":
    return _build_shape_model(model_name, dict(key))


def _build_shape_model(model_name: str, create_kwargs: dict[str, Any]) -> "nn.Module":
    from ..metrics.flops import as_vision_transformer, meta_model

    return as_vision_transformer(meta_model(model_name, **create_kwargs))


def layer_density_for(model: "nn.Module", density: float, distribution: str = "erk") -> dict[str, float]:
    """Per masked weight, the density SViTE's masks give it for a global ``density`` spread by
    ``distribution`` (exact active counts, as the engine draws them)."""
    from ..engine.sparse import layer_counts, layer_densities, masked_parameters

    shapes = {name: tuple(p.shape) for name, p in masked_parameters(model).items()}
    counts = layer_counts(shapes, layer_densities(shapes, density, distribution))
    return {name: counts[name] / math.prod(shape) for name, shape in shapes.items()}


def structure_for(model: "nn.Module", head_density: float | None, mlp_density: float | None) -> list[tuple[int, int]]:
    """S²ViTE's uniform per-block budget, exactly as the engine sets it (``unit_budget``:
    ``int(H · head_density)`` heads, ``int(M · mlp_density)`` neurons, at least one of each)."""
    from ..engine.structured import unit_budget
    from ..metrics.flops import block_widths

    return [
        (
            heads if head_density is None else unit_budget(heads, head_density),
            hidden if mlp_density is None else unit_budget(hidden, mlp_density),
        )
        for heads, hidden in block_widths(model)
    ]


def macs_for(
    model_name: str,
    img_size: int | None = None,
    num_classes: int | None = None,
    density: float | None = None,
    distribution: str = "erk",
    head_density: float | None = None,
    mlp_density: float | None = None,
    keep_tokens: int | None = None,
    keep_ratio: float | None = None,
    **create_kwargs: Any,
) -> "MacsReport":
    """Dense and sparse MACs of a timm ViT (a preset included) by name, without allocating its
    weights.

    Args:
        model_name: a timm model name (``deit_small_patch16_224``, ``vit_digits``).
        img_size, num_classes: passed to ``timm.create_model`` (``None``: the model's own).
        density, distribution: SViTE weight density and its per-layer spread (exact counts, as
            the engine's masks have).
        head_density, mlp_density: S²ViTE share of heads and MLP neurons kept per block.
        keep_tokens: SViTE+ tokens kept **including** prefix tokens such as cls (paper: 187 of
            197); or ``keep_ratio``, the share of patch tokens kept.
        create_kwargs: further ``timm.create_model`` arguments (``patch_size``, ``embed_dim``...).
    """
    from ..metrics.flops import patch_tokens_kept, vit_macs

    if img_size is not None:
        create_kwargs["img_size"] = img_size
    if num_classes is not None:
        create_kwargs["num_classes"] = num_classes
    model = shape_model(model_name, **create_kwargs)
    layer_density = None if density is None else layer_density_for(model, density, distribution)
    for name, value in (("head_density", head_density), ("mlp_density", mlp_density)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ConfigError(name, f"{value!r} must be in (0, 1]")
    structure = None
    if head_density is not None or mlp_density is not None:
        structure = structure_for(model, head_density, mlp_density)
    tokens = patch_tokens_kept(int(model.patch_embed.num_patches), int(model.num_prefix_tokens), keep_tokens, keep_ratio)
    return vit_macs(model, layer_density=layer_density, tokens=tokens, structure=structure)
