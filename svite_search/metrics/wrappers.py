"""The model inside its wrappers, for every layer that reads a model's own modules.

Training wraps a model (``DistributedDataParallel``, ``DataParallel`` and timm's EMA hold it as
``.module``; ``torch.compile`` as ``._orig_mod``), but parameter names, block widths and
attributes such as ``patch_embed`` are the inner model's. This is the one definition of "the
model inside": the MACs count reads through it here, and the engine re-exports it.
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["unwrap"]


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside wrappers: ``.module`` (DDP, DataParallel, timm EMA) and ``torch.compile``
    (``._orig_mod``), looked through at any depth; a module that wraps itself stops the walk."""
    seen = {id(module)}
    while True:
        inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module) or id(inner) in seen:
            return module
        seen.add(id(inner))
        module = inner
