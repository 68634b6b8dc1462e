"""Model factory: any timm ViT/DeiT by name, with overrides, plus presets sized for small data.

Pretrained weights are never loaded unless asked for (the paper trains sparse from scratch).

Example::

    model = build_model(ModelConfig(name="vit_digits"), num_classes=10, in_chans=1)
    model = build_model(ModelConfig(name="deit_small_patch16_224", drop_path=0.1), num_classes=1000)
"""
from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

import timm  # noqa: E402

from ..config import ModelConfig  # noqa: E402
from ..errors import ConfigError  # noqa: E402


@dataclass(frozen=True)
class Preset:
    """A named architecture: a timm base model plus the keyword arguments that resize it."""

    base: str
    kwargs: dict[str, Any]
    description: str


#: Presets sized for the embedded 8x8 digits: train to > 95 % top-1 in seconds on 2 CPU cores.
PRESETS: dict[str, Preset] = {
    "vit_digits": Preset(
        "vit_tiny_patch16_224",
        dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        "4 blocks, 4 heads, width 64, 16 patches of 2x2 (digits 8x8)",
    ),
    "vit_digits_small": Preset(
        "vit_tiny_patch16_224",
        dict(img_size=8, patch_size=2, in_chans=1, embed_dim=96, depth=6, num_heads=6, mlp_ratio=4.0),
        "6 blocks, 6 heads, width 96 (DeiT-Small's shape, scaled to digits)",
    ),
    "vit_micro": Preset(
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        "2 blocks, 2 heads, width 32, 32x32 input: for tests and smoke runs",
    ),
}

_OVERRIDES = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio")


def is_known_model(name: str) -> bool:
    return name in PRESETS or timm.is_model(name)


def model_kwargs(cfg: ModelConfig, *, num_classes: int | None = None, in_chans: int | None = None) -> tuple[str, dict[str, Any]]:
    """Resolve a model config to ``(timm name, create_model kwargs)``.

    Precedence: explicit config overrides > the dataset's classes/channels > the preset's values.
    """
    if not is_known_model(cfg.name):
        raise ConfigError("model.name", f"unknown model {cfg.name!r} (a preset: {', '.join(PRESETS)}; or a timm ViT name)")
    preset = PRESETS.get(cfg.name)
    base = preset.base if preset else cfg.name
    kwargs: dict[str, Any] = dict(preset.kwargs) if preset else {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    for key in _OVERRIDES:
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    kwargs.update(drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path)
    return base, kwargs


#: freshly initialised models, by (timm name, kwargs, torch RNG state before the build), with the
#: RNG state after it: see :func:`build_model`
_TEMPLATES: "OrderedDict[tuple[Any, ...], tuple[nn.Module, torch.Tensor]]" = OrderedDict()
_MAX_TEMPLATES = 4


def _template_key(base: str, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()
    return base, repr(sorted(kwargs.items())), str(torch.get_default_dtype()), rng


def build_model(cfg: ModelConfig, *, num_classes: int | None = None, in_chans: int | None = None) -> nn.Module:
    """Create the timm model described by ``cfg`` (random init unless ``cfg.pretrained``).

    A search builds the same model from the same seed in trial after trial, and timm's weight
    initialisation is most of a small model's set-up (truncated normals on every layer). So a
    randomly initialised model is kept as a template, keyed by its arguments and the torch RNG
    state it was drawn from; a later build from the same state returns a copy and leaves the RNG
    where the build would have: the same weights and the same random stream after it as a fresh
    build, bit for bit.
    """
    base, kwargs = model_kwargs(cfg, num_classes=num_classes, in_chans=in_chans)
    key = None if cfg.pretrained else _template_key(base, kwargs)
    if key is not None and key in _TEMPLATES:
        template, rng_after = _TEMPLATES[key]
        _TEMPLATES.move_to_end(key)
        torch.set_rng_state(rng_after)
        return copy.deepcopy(template)
    try:
        model = timm.create_model(base, pretrained=cfg.pretrained, **kwargs)
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
