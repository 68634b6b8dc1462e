"""SViTE+: learnable token selection (data sparsity) for timm Vision Transformers.

The method, and where it departs from the authors' code: ``docs/METHOD.md``, section 5.

A ``Linear(D, 1)`` scorer ranks the patch tokens right after the position embedding; the top
``k`` (plus the class and any other prefix tokens) go on to the blocks. Training picks them by
Gumbel top-k with a straight-through gradient, evaluation by the plain top-k. By default the
kept tokens are gathered, so every block really runs on ``k + prefix`` tokens; ``mode="zero"``
is the authors' fixed-length zero masking (the ``reference`` preset).

Example::

    selector = install_token_selector(model, keep_ratio=0.5)        # before building the optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    temperature = TokenTemperature(selector, total_steps=10_000)    # call .step() per step
    kept = kept_patch_tokens(model)   # patch tokens the blocks see; the class token comes on top
    assert kept == selector.keep_tokens < selector.num_patches

``svite_search.metrics.vit_macs(model, tokens=kept_patch_tokens(model))`` counts its MACs.

See :mod:`svite_search.engine.tokens._selector` for a complete training loop.
"""
from __future__ import annotations

from ._gumbel import gumbel_noise_like, gumbel_topk, hard_mask, topk_sorted
from ._schedule import SHAPES, TokenTemperature, temperature_at
from ._selector import (
    MODES,
    TokenSelector,
    find_token_selector,
    install_token_selector,
    kept_patch_tokens,
    preset_options,
    resolve_keep_tokens,
    uninstall_token_selector,
)

__all__ = [
    "MODES",
    "SHAPES",
    "TokenSelector",
    "TokenTemperature",
    "find_token_selector",
    "gumbel_noise_like",
    "gumbel_topk",
    "hard_mask",
    "install_token_selector",
    "kept_patch_tokens",
    "preset_options",
    "resolve_keep_tokens",
    "temperature_at",
    "topk_sorted",
    "uninstall_token_selector",
]
