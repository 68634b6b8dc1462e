"""Model factory: any timm ViT/DeiT by name, with overrides, the presets sized for small data included.

The presets (``vit_digits``, ``vit_digits_small``, ``vit_micro``: :mod:`.presets`) are
registered timm models, so one path builds every model: ``timm.create_model(name, **overrides)``.
Pretrained weights are never loaded unless asked for (the paper trains sparse from scratch).

Example::

    model = build_model(ModelConfig(name="vit_digits"), num_classes=10, in_chans=1)
    model = build_model(ModelConfig(name="deit_small_patch16_224", drop_path=0.1), num_classes=1000)
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

import timm  # noqa: E402

from ..config import ModelConfig  # noqa: E402
from ..errors import ConfigError  # noqa: E402
from .presets import PRESETS  # noqa: E402  (registers the presets with timm)

__all__ = ["PRESETS", "build_model", "create_kwargs", "is_known_model", "model_input_size"]

#: Model config fields passed to ``timm.create_model`` when set.
_OVERRIDES = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio")


def is_known_model(name: str) -> bool:
    """Whether timm can build ``name`` (its own models and the registered presets alike)."""
    return timm.is_model(name)


def create_kwargs(cfg: ModelConfig, *, num_classes: int | None = None, in_chans: int | None = None) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments of a model config.

    Precedence: explicit config overrides > the dataset's classes/channels > the model's own
    values (a preset's entrypoint and default config, as for any timm model).
    """
    if not is_known_model(cfg.name):
        raise ConfigError("model.name", f"unknown model {cfg.name!r} (a preset: {', '.join(PRESETS)}; or a timm ViT name)")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    for key in _OVERRIDES:
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    kwargs.update(drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path)
    return kwargs


#: freshly initialised models, by (timm name, kwargs, torch RNG state before the build), with the
#: RNG state after it: see :func:`build_model`
_TEMPLATES: "OrderedDict[tuple[Any, ...], tuple[nn.Module, torch.Tensor]]" = OrderedDict()
_MAX_TEMPLATES = 4


def _template_key(name: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()
    return name, repr(sorted(kwargs.items())), str(torch.get_default_dtype()), rng


def build_model(cfg: ModelConfig, *, num_classes: int | None = None, in_chans: int | None = None) -> nn.Module:
    """Create the timm model described by ``cfg`` (random init unless ``cfg.pretrained``).

    A search builds the same model from the same seed in trial after trial, and timm's weight
    initialisation is most of a small model's set-up (truncated normals on every layer). So a
    randomly initialised model is kept as a template, keyed by its arguments and the torch RNG
    state it was drawn from; a later build from the same state returns a copy and leaves the RNG
    where the build would have: the same weights and the same random stream after it as a fresh
    build, bit for bit.
    """
    kwargs = create_kwargs(cfg, num_classes=num_classes, in_chans=in_chans)
    key = None if cfg.pretrained else _template_key(cfg.name, kwargs)
    if key is not None and key in _TEMPLATES:
        template, rng_after = _TEMPLATES[key]
        _TEMPLATES.move_to_end(key)
        torch.set_rng_state(rng_after)
        return copy.deepcopy(template)
    try:
        model = timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError("model", f"cannot build {cfg.name!r} with {kwargs}: {err}") from None
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ConfigError("model.name", f"{cfg.name!r} is not a ViT (no blocks/patch_embed)")
    if key is not None:
        _TEMPLATES[key] = (copy.deepcopy(model), torch.get_rng_state())
        while len(_TEMPLATES) > _MAX_TEMPLATES:
            _TEMPLATES.popitem(last=False)
    return model


def model_input_size(model: nn.Module) -> tuple[int, int, int]:
    """``(channels, height, width)`` the model expects."""
    pe = model.patch_embed
    h, w = pe.img_size
    return pe.proj.in_channels, h, w
