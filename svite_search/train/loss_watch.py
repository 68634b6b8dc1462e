"""The training loss checked and averaged without stalling the GPU.

Reading a CUDA loss with ``.item()`` right after the forward pass makes the host wait for the
forward to finish before it can queue the backward pass: the GPU idles once per step. Here the
loss (and its finiteness flag, reduced over ranks on the device) is copied to the host
asynchronously after each forward, and read one step later, when that copy has long finished,
so the host never waits on kernels it has just queued. On a CPU the copy is the tensor itself
and the read costs nothing; the same one-step lag runs there so the path is tested everywhere.

A non-finite loss therefore stops the run one optimizer step after it appears (at the latest
when the epoch ends, before any checkpoint is written), naming the step where it appeared; all
ranks see the same reduced flag and stop together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class _Pending:
    host: torch.Tensor  # [loss, finite on every rank]
    event: Any  # torch.cuda.Event or None
    step: int
    batch: int


class LossWatch:
    """Running mean of one epoch's training loss, checked for finiteness with a lag of one step.

    ``on_non_finite(value, step)`` is called (it should raise) when a loss is NaN or infinite
    on any rank.
    """

    def __init__(self, device: torch.device, *, distributed: bool, on_non_finite: Callable[[float, int], None]) -> None:
        self.device = device
        self.distributed = distributed
        self.on_non_finite = on_non_finite
        self._pending: _Pending | None = None
        self.total = 0.0
        self.seen = 0
        self.last = math.nan
        self.reads = 0  # losses read on the host (one per step, always a step late)

    def push(self, loss: torch.Tensor, *, step: int, batch: int) -> None:
        """Queue this step's loss and read the previous step's."""
        value = loss.detach().float().reshape(1)
        finite = torch.isfinite(value).float()
        if self.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        packed = torch.cat([value, finite])
        event = None
        if packed.device.type == "cuda":
            # an asynchronous copy needs pinned host memory (into pageable memory it would wait)
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            packed = host
            event = torch.cuda.Event()
            event.record()
        previous, self._pending = self._pending, _Pending(packed, event, step, batch)
        if previous is not None:
            self._settle(previous)

    def flush(self) -> float:
        """Read the last queued loss; the epoch's mean loss."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._settle(pending)
        return self.total / max(self.seen, 1)

    def _settle(self, pending: _Pending) -> None:
        if pending.event is not None:
            pending.event.synchronize()
        value, finite = pending.host.tolist()
        self.reads += 1
        if finite < 1.0:
            self.on_non_finite(value, pending.step)
        self.total += value * pending.batch
        self.seen += pending.batch
        self.last = value
