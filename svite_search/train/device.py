"""Where a run trains and in which precision: device choice, mixed precision, DDP backend.

Each decision is a small pure function of what the process can see, so the logic that matters
on GPU clusters is tested on any machine.

* :func:`resolve_device`: ``auto`` trains on CUDA when this process sees a GPU. Ray decides
  what a trial sees: it sets ``CUDA_VISIBLE_DEVICES`` to the trial's GPUs (``0`` then means the
  first of them), and to the empty string for a trial without GPUs, so a CUDA machine runs a
  ``gpus_per_trial: 0`` trial on its CPUs. Asking for ``cuda`` where none is visible is a user
  error naming ``CUDA_VISIBLE_DEVICES``. Under ``torch.distributed`` each process trains on its
  own GPU: the one Ray Train (or the user) made current, else ``LOCAL_RANK``.
* :func:`amp_settings`: mixed precision is on by default with CUDA; ``bfloat16`` where the
  device supports it (no gradient scaler needed: bf16 has fp32's range), else ``float16`` with
  a ``GradScaler`` whose gradients are unscaled before the engine reads them.
* :func:`ddp_backend`: NCCL for workers with a GPU each, gloo for CPU or GPU-sharing workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import UserInputError

AMP_DTYPES = ("auto", "bfloat16", "float16")


def _visible_note(env: Mapping[str, str]) -> str:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return ""
    return f" (CUDA_VISIBLE_DEVICES={visible!r}: under Ray, a trial sees only the GPUs it was given; " \
           "set executor.gpus_per_trial)"


def resolve_device(
    name: str,
    *,
    distributed: bool = False,
    cuda_available: bool | None = None,
    device_count: int | None = None,
    current_device: int | None = None,
    env: Mapping[str, str] | None = None,
) -> torch.device:
    """The device ``train.device`` names, checked against what this process can see.

    The keyword arguments default to this process's CUDA state and environment; tests pass
    them to check the decisions a GPU machine would make.
    """
    env = os.environ if env is None else env
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto" and not cuda_available:
        return torch.device("cpu")
    if not cuda_available:
        raise UserInputError(f"train.device: {name!r} requested but CUDA is not available{_visible_note(env)}")
    count = torch.cuda.device_count() if device_count is None else device_count
    requested = torch.device("cuda" if name == "auto" else name)
    if requested.index is not None:
        index = requested.index
    elif distributed:
        current = torch.cuda.current_device() if current_device is None else current_device
        local_rank = env.get("LOCAL_RANK")
        # Ray Train makes each worker's GPU current before the training loop starts; a
        # launcher that does not (torchrun) leaves device 0 current and sets LOCAL_RANK.
        index = current if current != 0 or local_rank is None else int(local_rank) % max(count, 1)
    else:
        index = torch.cuda.current_device() if current_device is None else current_device
    if index >= count:
        raise UserInputError(
            f"train.device: {name!r} but this process sees {count} GPU(s){_visible_note(env)}"
        )
    return torch.device("cuda", index)


@dataclass(frozen=True)
class AmpSettings:
    """Mixed precision of one run: autocast on or off, its dtype, and whether a scaler is needed."""

    enabled: bool
    dtype: torch.dtype
    device_type: str

    @property
    def needs_scaler(self) -> bool:
        """fp16 underflows small gradients without loss scaling; bf16 has fp32's exponent range."""
        return self.enabled and self.dtype == torch.float16

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None

    @property
    def label(self) -> str:
        return str(self.dtype).removeprefix("torch.") if self.enabled else "float32"


def amp_settings(
    device: torch.device, amp: bool | None, amp_dtype: str = "auto", *, bf16_supported: bool | None = None
) -> AmpSettings:
    """Decide ``train.amp`` / ``train.amp_dtype`` for ``device``.

    ``amp`` defaults to on with CUDA and off on CPU (CPU autocast runs when asked for, in
    either dtype, which also lets the fp16 scaler path run on a CPU). ``auto`` picks
    ``bfloat16`` where supported (CPUs; CUDA GPUs from Ampere on), else ``float16``.
    """
    if amp_dtype not in AMP_DTYPES:
        raise UserInputError(f"train.amp_dtype: {amp_dtype!r} is not one of {', '.join(AMP_DTYPES)}")
    enabled = device.type == "cuda" if amp is None else bool(amp)
    if bf16_supported is None:
        bf16_supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if amp_dtype == "auto":
        dtype = torch.bfloat16 if bf16_supported else torch.float16
    elif amp_dtype == "bfloat16":
        if enabled and not bf16_supported:
            raise UserInputError(f"train.amp_dtype: bfloat16 is not supported on {device}; use float16 or auto")
        dtype = torch.bfloat16
    else:
        dtype = torch.float16
    return AmpSettings(enabled=enabled, dtype=dtype, device_type=device.type)


def ddp_backend(requested: str | None, *, gpus_per_worker: float) -> str:
    """The ``torch.distributed`` backend of a data-parallel trial.

    NCCL only reduces CUDA tensors and refuses two ranks on one GPU ("duplicate GPU"), which is
    what fractional ``gpus_per_trial`` gives several workers; gloo reduces CPU tensors (and CUDA
    ones, slowly). So the default is NCCL for workers with a whole GPU each, else gloo.
    """
    whole_gpus = gpus_per_worker >= 1
    if requested is None:
        return "nccl" if whole_gpus else "gloo"
    if requested not in ("nccl", "gloo"):
        raise UserInputError(f"executor.backend: {requested!r} is not nccl or gloo")
    if requested == "nccl" and not whole_gpus:
        what = "GPU workers (set executor.gpus_per_trial >= 1)" if gpus_per_worker <= 0 else \
            f"one whole GPU per worker (executor.gpus_per_trial is {gpus_per_worker})"
        raise UserInputError(f"executor.backend: nccl needs {what}, or use gloo")
    return requested
