"""ViT presets sized for small data, registered with timm like timm's own models.

``vit_digits`` and ``vit_digits_small`` fit scikit-learn's 8x8 grey digits (one channel, ten
classes); ``vit_micro`` is the smallest useful ViT, for tests and smoke runs on 32x32 images.
They are plain timm ``VisionTransformer`` models: each has an entrypoint registered with
:func:`timm.models.register_model` and a default config (input size, classes, normalisation),
so every timm tool takes them by name, and keyword arguments override the preset's values
exactly as they do for ``vit_tiny_patch16_224``.

Importing :mod:`svite_search` registers them as soon as timm is imported (see
:mod:`svite_search._timm_hook`); importing this module registers them at once.

Example::

    import svite_search, timm
    model = timm.create_model("vit_digits")             # 1 x 8 x 8 in, 10 classes
    model = timm.create_model("vit_digits", depth=2)    # overrides pass through
"""
from __future__ import annotations

from typing import Any

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model  # noqa: E402
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn  # noqa: E402

__all__: list[str] = []  # register_model adds each entrypoint

#: Normalisation of the digits data set (pixels 0..16 scaled to [0, 1], then these train-set
#: statistics): what ``svite_search.data`` applies to the digits.
DIGITS_MEAN, DIGITS_STD = (0.3051,), (0.3781,)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """A default config without weights: the presets are trained from scratch."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "vit_digits": _cfg(input_size=(1, 8, 8), num_classes=10, mean=DIGITS_MEAN, std=DIGITS_STD),
    "vit_digits_small": _cfg(input_size=(1, 8, 8), num_classes=10, mean=DIGITS_MEAN, std=DIGITS_STD),
    "vit_micro": _cfg(input_size=(3, 32, 32)),
})


def _has_weights_source(kwargs: dict[str, Any]) -> bool:
    """Whether the caller named weights of their own (``pretrained_cfg`` or its overlay)."""
    for cfg in (kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")):
        if cfg is not None and not isinstance(cfg, str):
            values = cfg if isinstance(cfg, dict) else vars(cfg)
            if any(values.get(key) for key in ("file", "url", "hf_hub_id", "state_dict")):
                return True
    return False


def _create_vit(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Build a preset as timm builds its ViTs (``build_model_with_cfg`` with the preset's config).

    The presets publish no weights, so ``pretrained=True`` needs weights of one's own
    (``pretrained_cfg_overlay=dict(file=...)``); asked for without, it is refused instead of
    silently initialising at random.
    """
    if pretrained and not _has_weights_source(kwargs):
        raise ValueError(
            f"{variant} has no published weights (it trains from scratch); pass "
            "pretrained_cfg_overlay=dict(file=...) to load your own, or pretrained=False"
        )
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.pop("out_indices", 3), feature_cls="getter"),
        **kwargs,
    )


@register_model
def vit_digits(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT for the 8x8 digits: 4 blocks, 4 heads, width 64, 16 patches of 2x2.

    Trains to > 95 % top-1 on the digits in seconds on two CPU cores.
    """
    model_args = dict(patch_size=2, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)
    return _create_vit("vit_digits", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_digits_small(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """DeiT-Small's shape scaled to the 8x8 digits: 6 blocks, 6 heads, width 96."""
    model_args = dict(patch_size=2, embed_dim=96, depth=6, num_heads=6, mlp_ratio=4.0)
    return _create_vit("vit_digits_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_micro(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The smallest useful ViT, for tests and smoke runs: 2 blocks, 2 heads, width 32, 32x32
    input in 16 patches of 8x8 (ImageNet's 1000 classes unless told otherwise)."""
    model_args = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
    return _create_vit("vit_micro", pretrained=pretrained, **dict(model_args, **kwargs))


#: The presets, by name, with a line on each.
PRESETS: dict[str, str] = {
    "vit_digits": "4 blocks, 4 heads, width 64, 16 patches of 2x2 (digits 8x8)",
    "vit_digits_small": "6 blocks, 6 heads, width 96 (DeiT-Small's shape, scaled to digits)",
    "vit_micro": "2 blocks, 2 heads, width 32, 32x32 input: for tests and smoke runs",
}
