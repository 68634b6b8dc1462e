"""Register the package's model presets with timm whenever timm is imported.

``timm.create_model("vit_digits")`` should work after ``import svite_search``, yet importing
the package must not import torch or timm (the command line answers ``--help`` and refuses bad
input in a fraction of a second). So importing the package installs this import hook instead:

- timm already imported: the presets (:mod:`svite_search.models.presets`) are registered at once;
- otherwise, the first ``import timm`` (by anyone) runs the torchvision guard, lets timm import
  as usual, and then registers the presets. A probe such as ``importlib.util.find_spec("timm")``
  imports nothing.

After timm has loaded, its module keeps its own loader, so nothing else sees the hook.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
from types import ModuleType
from typing import Any, Sequence

#: the module whose import registers the presets with timm
PRESETS_MODULE = "svite_search.models.presets"


def register_presets() -> None:
    importlib.import_module(PRESETS_MODULE)


def _guard_torchvision() -> None:
    from ._torchvision_guard import ensure_torchvision

    try:
        ensure_torchvision()
    except ModuleNotFoundError as err:  # no torchvision at all: timm decides whether it needs it
        if err.name != "torchvision":
            raise


class _RegisteringLoader(importlib.abc.Loader):
    """timm's own loader, plus: the torchvision guard before it, the presets after it."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        _guard_torchvision()
        try:
            self._loader.exec_module(module)
        finally:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        _uninstall()
        register_presets()

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class _TimmFinder(importlib.abc.MetaPathFinder):
    """Finds timm with the other finders and wraps its loader."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _TimmFinder):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TimmFinder)]


def install() -> None:
    """Register the presets now if timm is imported, else when it is (idempotent)."""
    if "timm" in sys.modules:
        register_presets()
    elif not any(isinstance(finder, _TimmFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TimmFinder())
