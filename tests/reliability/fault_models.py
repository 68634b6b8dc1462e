"""Faulty ViTs for the reliability tests, plugged in through timm's model registry.

``svite-search`` accepts any registered timm ViT as ``model.name``, so registering a model is
the supported way to put a fault inside a trial without touching the product's code: these
models train normally until their second training forward pass, then raise.

=====================  ==========================================================
``rel_vit_ok``         never fails
``rel_vit_raise``      ``RuntimeError`` (a bug in user code, a broken batch)
``rel_vit_oom``        ``torch.OutOfMemoryError`` (what CUDA raises when it is full)
``rel_vit_memory``     ``MemoryError`` (what the host raises when it is full)
``rel_vit_slow``       never fails; sleeps ``REL_SLOW_S`` seconds (default 0.25) per
                       training step, so a trial lasts without using the CPU, and
                       waits (at most a minute) for the file ``REL_GATE`` names, if
                       set, before its first step
=====================  ==========================================================

Leak check: every model that has run is kept in a weak set; when a model runs its first forward
pass (a trial's start: the harness may hand a trial a copy of a cached model, so construction is
not), the ones whose fault fired earlier must already be gone (the failed trial released its
model, optimizer state and engine). Each start appends ``{"model": name, "leaked": n}`` to the JSON-lines file named by
``REL_FAULT_LOG`` when that is set.

``python fault_models.py ARGS`` runs ``svite-search ARGS`` with these models registered.
"""
from __future__ import annotations

import gc
import inspect
import json
import os
import time
import weakref
from typing import Any

import svite_search.models  # noqa: F401  (the torchvision import guard runs before timm)
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

FAULT_AFTER_FORWARDS = 1  # the fault fires on the second training forward pass
FAULTS = {
    "rel_vit_ok": None,
    "rel_vit_raise": lambda: RuntimeError("injected fault: the forward pass raised"),
    "rel_vit_oom": lambda: torch.OutOfMemoryError("injected fault: CUDA out of memory. Tried to allocate 20.00 GiB"),
    "rel_vit_memory": lambda: MemoryError("injected fault: host memory exhausted"),
    "rel_vit_slow": None,
}
_LIVE: "weakref.WeakSet[FaultyViT]" = weakref.WeakSet()


class FaultyViT(VisionTransformer):
    """A timm ViT whose training forward raises ``fault()`` once it has run a few times."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fault_name = name
        self.fault = FAULTS[name]
        self.started = False  # a trial starts at its model's first forward: the harness may hand
        #                       it a copy of a cached model, so construction is no trial's start
        self.fired = False
        self.training_forwards = 0
        self.slow_s = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.started:
            self.started = True
            _log_start(self.fault_name)
            _LIVE.add(self)
        if self.training and self.slow_s:
            _wait_for_gate()
            time.sleep(self.slow_s)
        if self.training and self.fault is not None:
            if self.training_forwards >= FAULT_AFTER_FORWARDS:
                self.fired = True
                raise self.fault()
            self.training_forwards += 1
        return super().forward(x)


def _wait_for_gate(limit_s: float = 60.0) -> None:
    gate = os.environ.get("REL_GATE")
    deadline = time.monotonic() + limit_s
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)


def _log_start(name: str) -> None:
    gc.collect()
    leaked = sum(1 for model in list(_LIVE) if model.fired)
    path = os.environ.get("REL_FAULT_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"model": name, "leaked": leaked}) + "\n")


def _build(name: str, kwargs: dict[str, Any]) -> FaultyViT:
    accepted = inspect.signature(VisionTransformer.__init__).parameters
    shape = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
    shape.update({k: v for k, v in kwargs.items() if k in accepted})  # not timm's pretrained_cfg, cache_dir
    model = FaultyViT(name, **shape)
    if name == "rel_vit_slow":
        model.slow_s = float(os.environ.get("REL_SLOW_S", "0.25"))
    return model


@register_model
def rel_vit_ok(pretrained: bool = False, **kwargs: Any) -> FaultyViT:
    return _build("rel_vit_ok", kwargs)


@register_model
def rel_vit_raise(pretrained: bool = False, **kwargs: Any) -> FaultyViT:
    return _build("rel_vit_raise", kwargs)


@register_model
def rel_vit_oom(pretrained: bool = False, **kwargs: Any) -> FaultyViT:
    return _build("rel_vit_oom", kwargs)


@register_model
def rel_vit_slow(pretrained: bool = False, **kwargs: Any) -> FaultyViT:
    return _build("rel_vit_slow", kwargs)


@register_model
def rel_vit_memory(pretrained: bool = False, **kwargs: Any) -> FaultyViT:
    return _build("rel_vit_memory", kwargs)


if __name__ == "__main__":
    from svite_search.cli import main

    raise SystemExit(main())
