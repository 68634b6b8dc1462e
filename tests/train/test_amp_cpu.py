"""Mixed precision through the trainer, run on the CPU (CPU autocast has both dtypes and a
GradScaler): bf16 autocast, fp16 with a scaler whose gradients the engine reads unscaled,
masks in the parameter's dtype, and exact resume with the scaler's state."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from _support.probes import StatelessProbe
from svite_search.config import config_from_dict
from svite_search.train import Trainer

BASE = {
    "name": "amp",
    "data": {"dataset": "digits", "batch_size": 32},
    "model": {"name": "vit_digits", "embed_dim": 32, "depth": 2, "num_heads": 2},
    "train": {"epochs": 2, "warmup_epochs": 0, "lr": 2e-3, "max_steps_per_epoch": 3, "seed": 2},
    "sparsity": {"update_interval": 2},
}


def cfg(method: str = "dense", **train: Any):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    raw["method"] = method
    raw["train"].update(train)
    return config_from_dict(raw)


class GradProbe(StatelessProbe):
    """An engine component that records, at the moment the engine runs, the gradient norm of
    every weight the engine reads (after the optimizer step, as the engine sees them)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.norms: dict[int, float] = {}  # iteration -> gradient norm the engine saw
        self.finite: list[bool] = []

    def step(self) -> None:
        grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        self.finite.append(all(bool(torch.isfinite(g).all()) for g in grads))
        norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
        self.norms[self.trainer.state.step] = float(norm)


def _forward_dtypes(trainer: Trainer) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    trainer.model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    return seen


def test_amp_on_cpu_trains_in_bf16_by_default() -> None:
    trainer = Trainer(cfg("svite", amp=True, epochs=1, checkpoint=False), progress=False)
    seen = _forward_dtypes(trainer)
    trainer.fit()
    assert seen == {torch.bfloat16}
    assert trainer.scaler is None  # bf16 needs no loss scaling
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights


def test_fp16_scaler_gives_the_engine_unscaled_finite_gradients() -> None:
    reference = Trainer(cfg(epochs=2, checkpoint=False), progress=False)
    reference.components["probe"] = ref_probe = GradProbe(reference)
    reference.fit()

    trainer = Trainer(cfg(amp=True, amp_dtype="float16", epochs=2, checkpoint=False), progress=False)
    assert trainer.scaler is not None and trainer.scaler.get_scale() > 1000  # gradients are scaled
    seen = _forward_dtypes(trainer)
    trainer.components["probe"] = probe = GradProbe(trainer)
    trainer.fit()
    assert seen == {torch.float16}
    # The first steps overflow at the initial scale of 65536: the scaler skips them and so does
    # the engine, which only ever sees finite gradients.
    assert trainer.state.overflow_steps >= 1
    assert trainer.state.history[-1]["amp_overflow_steps"] == trainer.state.overflow_steps
    assert len(probe.finite) == trainer.state.step - trainer.state.overflow_steps >= 1
    assert all(probe.finite)
    # unscaled: the size of the fp32 run's gradient at the same iteration (the runs drift apart
    # a little), not the scale (thousands) times it
    assert probe.norms and all(0.33 < norm / ref_probe.norms[step] < 3.0 for step, norm in probe.norms.items())


def test_svite_masks_hold_in_the_parameters_dtype_under_fp16() -> None:
    trainer = Trainer(cfg("svite", amp=True, amp_dtype="float16", checkpoint=False), progress=False)
    trainer.fit()
    engine = trainer.components["svite"]
    assert engine.stats()["updates"] >= 1
    params = dict(trainer.model.named_parameters())
    for name, mask in engine.masks.items():
        assert mask.dtype == params[name].dtype == torch.float32, name
        assert bool((params[name][mask == 0] == 0).all()), name


def test_fp16_run_resumes_exactly_with_its_scaler_state(tmp_path: Path) -> None:
    config = cfg("svite", amp=True, amp_dtype="float16", epochs=3)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    straight.fit()
    Trainer(config, tmp_path / "resumed", progress=False).fit(stop_after_epochs=1)
    resumed = Trainer(config, tmp_path / "resumed", progress=False)
    resumed.fit()
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()
    assert resumed.state.history == straight.state.history
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_the_latency_objective_is_timed_under_the_runs_autocast() -> None:
    from svite_search.search import spec_from_dict
    from svite_search.search.objective import measure_latency_ms

    spec = spec_from_dict({"name": "lat", "objectives": [{"metric": "latency_ms", "direction": "minimize"}],
                           "search": {"latency": {"warmup": 0, "repeats": 1}}})
    trainer = Trainer(cfg(amp=True, epochs=1, checkpoint=False), progress=False)
    seen = _forward_dtypes(trainer)
    assert measure_latency_ms(trainer, spec) > 0
    assert seen == {torch.bfloat16}
