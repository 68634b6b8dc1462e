"""Keep timm's auto-augment posterize defined on every Pillow release.

timm's ``Posterize`` ops map their magnitude to the bits each channel keeps, and the strong end
of the range keeps none: ``PosterizeIncreasing`` (the DeiT recipe, ``rand-m9-mstd0.5-inc1``) at
magnitude 10, ``Posterize`` below magnitude 2.5. Up to Pillow 12 that gave a black image, as the
TPU AutoAugment recipe timm follows intends; Pillow 13 refuses zero bits with a ``ValueError``, so
a long run on the DeiT recipe ends at a random image (about one in seven hundred). This module
binds those ops to a posterize that keeps the black-image meaning, so the recipe behaves the same
whichever Pillow is installed.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from PIL import Image, ImageOps

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

from timm.data.auto_augment import AugMixAugment, AugmentOp, AutoAugment, RandAugment  # noqa: E402

__all__ = ["posterize_keeping_zero_bits", "with_defined_posterize"]

_POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def posterize_keeping_zero_bits(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize, with zero bits kept meaning a black image (as before Pillow 13)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0 and img.mode in ("L", "RGB"):
        return img.point(lambda _value: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _augment_ops(transform: Any) -> Iterator[AugmentOp]:
    if isinstance(transform, (RandAugment, AugMixAugment)):
        yield from transform.ops
    elif isinstance(transform, AutoAugment):
        for sub_policy in transform.policy:
            yield from sub_policy
    elif isinstance(getattr(transform, "transforms", None), Iterable):  # a Compose
        for inner in transform.transforms:
            yield from _augment_ops(inner)


def with_defined_posterize(transform: Any) -> Any:
    """Rebind the posterize ops inside ``transform`` (a timm train transform) in place; returns it."""
    for op in _augment_ops(transform):
        if op.name in _POSTERIZE_OPS:
            op.aug_fn = posterize_keeping_zero_bits
    return transform
