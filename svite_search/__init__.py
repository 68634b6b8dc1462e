"""svite-search: find, measure and reproduce sparse vision transformers.

Re-implements SViTE (unstructured dynamic sparse training), S²ViTE (structured head and neuron
sparsity with physical slimming) and SViTE+ (learnable token selection) on timm ViTs, inside a
search harness (Optuna, Ray Tune, MLflow).
"""
from __future__ import annotations

from ._torchvision_guard import ensure_torchvision as _ensure_torchvision

# timm imports torchvision; make that import safe before anything touches timm.
_ensure_torchvision()

__version__ = "0.1.0"
__all__ = ["__version__"]
