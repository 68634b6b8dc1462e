"""svite-search: find, measure and reproduce sparse vision transformers.

Re-implements SViTE (unstructured dynamic sparse training), S²ViTE (structured head and neuron
sparsity with physical slimming) and SViTE+ (learnable token selection) on timm ViTs, inside a
search harness (Optuna, Ray Tune, MLflow).

Importing the package imports nothing heavy: torch, timm, torchvision, Ray and MLflow are
imported by the modules (and commands) that use them, so ``svite-search --help`` and
``svite-search report`` start in a fraction of a second. Every module that imports timm first
calls :func:`svite_search._torchvision_guard.ensure_torchvision` (timm imports torchvision).

The model presets (``vit_digits``, ``vit_digits_small``, ``vit_micro``) are timm models:
``timm.create_model("vit_digits")`` works after ``import svite_search``, which registers them
with timm when timm is imported (:mod:`svite_search._timm_hook`), not before.
"""
from __future__ import annotations

from ._timm_hook import install as _install_timm_hook

__version__ = "0.1.0"
__all__ = ["__version__"]

_install_timm_hook()
