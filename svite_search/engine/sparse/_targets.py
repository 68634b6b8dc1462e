"""Which parameters SViTE masks: every weight matrix of the transformer, found by rule.

The paper sparsifies the patch-embedding convolution, ``attn.qkv``, ``attn.proj``, ``mlp.fc1``
and ``mlp.fc2`` of every block, and the classifier ``head``; biases, norms, ``cls_token``,
``pos_embed`` and the SViTE+ token selector stay dense. Rather than listing timm attribute names
(which differ between ViT variants), the rule is structural: the ``weight`` of every
``nn.Linear`` and ``nn.Conv2d`` is masked, except inside modules declared dense. A module is
dense when it (or an ancestor) sets ``svite_dense = True`` or when one component of its
qualified name is in :data:`DENSE_MODULE_NAMES` (the token selector's names). The rule works on
``meta``-device models too, so densities can be computed without allocating weights.

A weight tied between several layers (one ``Parameter`` object, or two over the same memory)
is one weight with one mask, listed under the first name module order gives it: two masks over
one storage would multiply into a density nobody asked for.

Names are those of the *unwrapped* model: a ``DistributedDataParallel`` (or any wrapper that
holds the model as ``.module``, such as timm's EMA) and a ``torch.compile`` wrapper are looked
through.
"""
from __future__ import annotations

import torch.nn as nn

from ...metrics.wrappers import unwrap  # one definition of "the model inside wrappers"

#: A module whose qualified name has one of these components is never masked (SViTE+ scorer).
DENSE_MODULE_NAMES: frozenset[str] = frozenset({"token_selector", "selector", "scorer"})

#: Layer types whose ``weight`` is masked.
MASKED_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


def _is_dense(qualified_name: str, module: nn.Module) -> bool:
    parts = qualified_name.split(".") if qualified_name else []
    return bool(getattr(module, "svite_dense", False)) or any(p in DENSE_MODULE_NAMES for p in parts)


def _storage_key(param: nn.Parameter) -> tuple | None:
    """What identifies the memory of ``param`` (``None`` on the ``meta`` device, which has none)."""
    if param.device.type == "meta":
        return None
    return (param.device, param.untyped_storage().data_ptr())


def masked_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights SViTE masks, keyed by parameter name, in module order, each storage once.

    Example::

        model = timm.create_model("deit_small_patch16_224")
        names = list(masked_parameters(model))
        assert names[:3] == ['patch_embed.proj.weight', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.proj.weight']
        assert names[-1] == "head.weight" and len(names) == 1 + 4 * 12 + 1
    """
    return _masked_and_tied(model)[0]


def tied_weight_names(model: nn.Module) -> dict[str, str]:
    """Other names of masked weights (a weight tied into a second layer) -> the masked name."""
    return _masked_and_tied(model)[1]


def _masked_and_tied(model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, str]]:
    model = unwrap(model)
    dense_prefixes: list[str] = []
    targets: dict[str, nn.Parameter] = {}
    aliases: dict[str, str] = {}
    seen_ids: dict[int, str] = {}
    seen_storage: dict[tuple, tuple[str, nn.Parameter]] = {}
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in dense_prefixes):
            continue
        if _is_dense(name, module):
            dense_prefixes.append(name)
            continue
        if isinstance(module, MASKED_LAYER_TYPES):
            weight = module.weight
            if not isinstance(weight, nn.Parameter) or weight.dim() < 2:
                continue
            qualified = f"{name}.weight" if name else "weight"
            if id(weight) in seen_ids:
                aliases[qualified] = seen_ids[id(weight)]  # the same Parameter in two layers
                continue
            key = _storage_key(weight)
            if key is not None and key in seen_storage:
                first, other = seen_storage[key]
                same_view = (other.shape, other.stride(), other.storage_offset()) == (
                    weight.shape, weight.stride(), weight.storage_offset()
                )
                if same_view:
                    aliases[qualified] = first  # tied by memory: the first name's mask covers it
                    continue
                raise ValueError(f"{qualified} overlaps the memory of {first} with another shape: cannot mask both")
            seen_ids[id(weight)] = qualified
            if key is not None:
                seen_storage[key] = (qualified, weight)
            targets[qualified] = weight
    return targets, aliases
