"""An independent count of a ViT's MACs with ``torch.utils.flop_counter.FlopCounterMode``.

Used to cross-check :func:`svite_search.metrics.flops.vit_macs`. The counter does not see fused
``scaled_dot_product_attention`` on every backend (on CPU it silently drops the attention
matmuls), so fused attention is switched off on the model instance for the count: timm then
computes ``q @ kᵀ`` and ``attn @ v`` as plain matmuls, which the counter sees. The count works on
a ``meta``-device model (shapes only), so even DeiT-Base costs no memory or compute.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def counted_macs(model: nn.Module, batch: int = 1) -> float:
    """MACs of one forward pass per image, counted by ``FlopCounterMode`` (FLOPs / 2)."""
    from .flops import as_vision_transformer

    model = as_vision_transformer(model)
    patch_embed = model.patch_embed
    height, width = patch_embed.img_size
    param = next(model.parameters())
    images = torch.zeros(batch, patch_embed.proj.in_channels, height, width, device=param.device, dtype=param.dtype)
    fused = [(m, m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    was_training = model.training
    try:
        for module, _ in fused:
            module.fused_attn = False
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        for module, value in fused:
            module.fused_attn = value
        model.train(was_training)
    return counter.get_total_flops() / 2 / batch
