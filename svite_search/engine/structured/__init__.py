"""S²ViTE: structured (head and neuron) dynamic sparsity, and physical slimming.

The method, and where it departs from the authors' code: ``docs/METHOD.md``, section 3.

* :class:`S2ViTE` / :class:`S2ViTEConfig`: the engine component. It keeps ``int(H · head_density)``
  heads and ``int(M · mlp_density)`` MLP neurons active per block and explores which ones on the
  schedule shared with SViTE (heads pruned by first-order Taylor importance and grown by
  gradient magnitude, neurons pruned by weight magnitude and grown by gradient). By default a
  head pruned in an update is not regrown in it (``head_growth="explore"``), so head sets move.
* :func:`slim_model`, :func:`save_slim`, :func:`load_slim`: turn the masked model into a
  genuinely smaller timm ViT that computes the same outputs, and store it with its architecture.

Example::

    engine = S2ViTE(model, optimizer, S2ViTEConfig(total_steps=10_000, head_density=0.5,
                                                   mlp_density=0.5, update_interval=500))
    ...  # optimizer.step(); engine.step() every iteration
    save_slim(slim_model(model, engine), "slim.pt")
"""
from __future__ import annotations

from ._scores import HeadScoreCapture, neuron_growth_signal, neuron_magnitude
from ._structured import DEFAULT_HEAD_GROWTH, HEAD_GROWTH, NEURON_GROWTH, OPTIMIZER_STATE, S2ViTE, S2ViTEConfig, prune_and_grow
from ._units import (
    BlockLayout,
    BlockMask,
    block_layouts,
    masks_from_weights,
    random_block_masks,
    structured_budgets,
    unit_budget,
    vit_blocks,
)
from .surgery import (
    SlimAttention,
    SlimMismatchError,
    build_slim_vit,
    check_same_outputs,
    load_slim,
    save_slim,
    slim_architecture,
    slim_model,
)

__all__ = [
    "BlockLayout",
    "BlockMask",
    "HeadScoreCapture",
    "DEFAULT_HEAD_GROWTH",
    "HEAD_GROWTH",
    "NEURON_GROWTH",
    "OPTIMIZER_STATE",
    "S2ViTE",
    "S2ViTEConfig",
    "SlimAttention",
    "SlimMismatchError",
    "block_layouts",
    "build_slim_vit",
    "check_same_outputs",
    "load_slim",
    "masks_from_weights",
    "neuron_growth_signal",
    "neuron_magnitude",
    "prune_and_grow",
    "random_block_masks",
    "save_slim",
    "slim_architecture",
    "slim_model",
    "structured_budgets",
    "unit_budget",
    "vit_blocks",
]
