"""svite-search: find, measure and reproduce sparse vision transformers.

Re-implements SViTE (unstructured dynamic sparse training), S²ViTE (structured head and neuron
sparsity with physical slimming) and SViTE+ (learnable token selection) on timm ViTs, inside a
search harness (Optuna, Ray Tune, MLflow).

Importing the package imports nothing heavy: torch, timm, torchvision, Ray and MLflow are
imported by the modules (and commands) that use them, so ``svite-search --help`` and
``svite-search report`` start in a fraction of a second. Every module that imports timm first
calls :func:`svite_search._torchvision_guard.ensure_torchvision` (timm imports torchvision).
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
