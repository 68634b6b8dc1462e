"""Resume restores every RNG from a checkpoint whose RNG tensors are not plain CPU ByteTensors.

On a GPU the trainer used to load checkpoints with ``map_location=<cuda device>``, which moves
the saved CPU RNG ByteTensors to the GPU, where ``torch.set_rng_state`` rejects them
(``TypeError: RNG state must be a torch.ByteTensor``). On a CPU machine the same failure is
reproduced with RNG tensors moved off the plain CPU ByteTensor type (another integer dtype, a
non-contiguous view). The real CUDA path is tested in ``tests/gpu``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from svite_search.config import config_from_dict
from svite_search.train import Trainer
from svite_search.train.checkpoint import atomic_torch_save, capture_rng_state, load_checkpoint, restore_rng_state

TINY = {
    "name": "tiny",
    "method": "svite",
    "data": {"dataset": "digits", "batch_size": 32},
    "model": {"name": "vit_digits", "embed_dim": 32, "depth": 2, "num_heads": 2, "drop_rate": 0.1},
    "train": {"epochs": 3, "warmup_epochs": 1, "lr": 2e-3, "max_steps_per_epoch": 3, "seed": 5},
    "sparsity": {"update_interval": 2},
}


def _draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), random.random(), float(np.random.rand())


def _foreign(rng: dict) -> dict:
    """The same RNG state as tensors that are not plain CPU ByteTensors."""
    out = dict(rng)
    wide = rng["torch"].to(torch.int64)
    out["torch"] = torch.stack([wide, wide], 1)[:, 0]  # int64 and non-contiguous
    out["numpy"] = dict(rng["numpy"], keys=rng["numpy"]["keys"].to(torch.int32))
    return out


def test_restore_accepts_rng_tensors_of_another_dtype_and_layout() -> None:
    saved = capture_rng_state()
    expected = _draws()
    restore_rng_state(_foreign(saved))
    assert _draws() == expected


def test_restore_refuses_float_rng_state() -> None:
    state = capture_rng_state()
    state["torch"] = state["torch"].float()
    with pytest.raises(TypeError, match="bytes"):
        restore_rng_state(state)


def test_resume_from_a_checkpoint_with_foreign_rng_tensors_continues_exactly(tmp_path: Path) -> None:
    cfg = config_from_dict(TINY)
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.fit()

    run_dir = tmp_path / "interrupted"
    Trainer(cfg, run_dir, progress=False).fit(stop_after_epochs=2)
    state = load_checkpoint(run_dir / "last.pt")
    state["rng"] = _foreign(state["rng"])
    atomic_torch_save(state, run_dir / "last.pt")

    resumed = Trainer(cfg, run_dir, progress=False)
    resumed.fit()
    assert resumed.state.history == straight.state.history
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
