"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the same directory and renamed over the old one,
so a crash mid-write leaves the previous checkpoint intact. RNG states are stored as tensors and
plain Python values so the safe unpickler accepts them.

RNG states are host data whatever the training device: ``torch.set_rng_state``,
``Generator.set_state`` and ``Tensor.numpy`` accept only CPU ByteTensors, so a checkpoint
loaded with ``map_location="cuda"`` would put them where they cannot be restored. The trainer
loads checkpoints on the CPU (``load_state_dict`` copies weights and optimizer state to the
parameters' device), and :func:`restore_rng_state` converts whatever it is given back to CPU
bytes, so a checkpoint written on any device resumes on any other.

Loading checks the archive's CRC-32 checksums first: ``torch.load`` reads tensor bytes without
checking them, so a checkpoint damaged on disk would otherwise resume a run from garbage weights.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import (  # noqa: F401  (re-exported: the writers of every file of a run)
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_archive,
    error_text,
    load_torch_file,
    new_temp_file,
    replace_durably,
)
from ..errors import UserInputError

CHECKPOINT_VERSION = 1


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated, damaged or foreign file is a
    :class:`UserInputError` naming the path (the same handling as the engine's ``load_slim``)."""
    path = Path(path)
    state = load_torch_file(path, "checkpoint", map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise UserInputError(f"{path}: not an svite-search checkpoint (no model state)")
    return state


def capture_rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """Every RNG a training run draws from, as safe-to-load values.

    On CUDA only the training device's generator is saved: reading every visible GPU's state
    (``get_rng_state_all``) would create a CUDA context, hundreds of MB, on each of them, and
    a DDP worker under Ray Train sees all the GPUs of its node."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured, from tensors on any device or dtype.

    The saved CUDA generator state goes to the training ``device`` (a trial resumed under Ray
    may run on another GPU, numbered 0 again). Older checkpoints hold a list with one state
    per GPU; the training device's entry is used."""
    torch.set_rng_state(rng_bytes(state["torch"]))
    random.setstate(_python_state_from_plain(state["python"]))
    np_state = state["numpy"]
    keys = torch.as_tensor(np_state["keys"]).detach().to("cpu", torch.int64).numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, int(np_state["pos"]), int(np_state["has_gauss"]), float(np_state["cached_gaussian"]))
    )
    device = torch.device(device) if device is not None else None
    saved = state.get("cuda")
    if saved is not None and device is not None and device.type == "cuda":
        if not isinstance(saved, torch.Tensor):  # a list, one per GPU
            saved = list(saved)
            saved = saved[device.index] if device.index is not None and device.index < len(saved) else saved[0]
        torch.cuda.set_rng_state(rng_bytes(saved), device)


def rng_bytes(state: Any) -> torch.Tensor:
    """An RNG state as the contiguous CPU ByteTensor the generators accept, whatever device or
    integer dtype it was loaded as (the values are bytes, so the cast is exact)."""
    tensor = torch.as_tensor(state).detach()
    if tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"RNG state must hold bytes, got a {tensor.dtype} tensor")
    return tensor.to(device="cpu", dtype=torch.uint8).contiguous()


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain: list) -> tuple:
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)
