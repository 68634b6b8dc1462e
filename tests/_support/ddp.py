"""Process groups for the distributed tests: one rendezvous, one set-up and one tear-down.

:func:`run_ranks` runs a worker in ``world_size`` CPU processes joined in one process group
(gloo by default) and hands back what each rank returned; :func:`process_group` joins the
calling process alone (world size 1), for a test of a DDP-wrapped model in its own process.

A worker is a module-level function ``worker(rank, *args) -> dict`` (the spawned processes
import it by name); what it returns is saved with ``torch.save`` and read back with
``weights_only=True``, so it holds tensors, numbers, strings, lists and dicts only.

Example::

    def _worker(rank: int, steps: int) -> dict:
        ...  # build a model, wrap it in DistributedDataParallel, train
        return {"masks": masks}

    first, second = run_ranks(_worker, 2, STEPS)
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@contextlib.contextmanager
def process_group(backend: str, rendezvous: str | Path, *, rank: int = 0, world_size: int = 1) -> Iterator[None]:
    """Join the default process group through the file ``rendezvous`` for the block."""
    dist.init_process_group(backend, init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_ranks(worker: Callable[..., dict[str, Any]], world_size: int, *args: Any,
              backend: str = "gloo") -> list[dict[str, Any]]:
    """Run ``worker(rank, *args)`` in ``world_size`` spawned processes (one intra-op thread each,
    all in one process group) and return each rank's result, rank 0 first. A worker's exception
    fails the call (``mp.spawn`` re-raises it here)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_main, args=(worker, world_size, backend, tmp, args), nprocs=world_size, join=True)
        return [torch.load(Path(tmp) / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]


def _rank_main(rank: int, worker: Callable[..., dict[str, Any]], world_size: int, backend: str, tmp: str,
               args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    with process_group(backend, Path(tmp) / "rendezvous", rank=rank, world_size=world_size):
        result = worker(rank, *args)
        torch.save(result, Path(tmp) / f"rank{rank}.pt")
