"""Make ``import torchvision`` work beside a CPU-only torch.

Some package indexes only carry a CUDA build of torchvision. Its compiled ops fail to load
beside a CPU torch, and importing torchvision then dies while registering fake kernels for
``torchvision::nms`` because the op schema was never defined. timm imports torchvision at
import time, so without help nothing in this package would import.

When (and only when) that import fails, this module defines the two missing op schemas with
``torch.library`` and imports torchvision again. The Python-level transforms and datasets we
use do not need the compiled ops. Where torchvision imports cleanly, nothing is touched.
"""
from __future__ import annotations

import sys

_MISSING_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

#: set to True when the guard had to define schemas (useful for diagnostics and tests)
patched: bool = False
_library = None  # keeps the torch.library.Library alive for the life of the process


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision() -> bool:
    """Import torchvision, defining the missing op schemas if its compiled ops fail to load.

    Returns True when the guard had to intervene, False when torchvision imported cleanly
    (or was already imported).
    """
    global patched, _library
    if "torchvision" in sys.modules and not patched:
        return False
    try:
        import torchvision  # noqa: F401

        return patched
    except (RuntimeError, OSError, ImportError) as first_error:
        if "torchvision::" not in str(first_error) and "operator" not in str(first_error):
            raise
        _forget_torchvision()
        import torch

        _library = torch.library.Library("torchvision", "DEF")
        for op, schema in _MISSING_SCHEMAS.items():
            try:
                _library.define(schema)
            except RuntimeError:  # already defined by a partial load
                pass
        patched = True
        import torchvision  # noqa: F401,F811

        return True
