"""Trainer.train_step: one iteration in the engine's documented order, the one the training
loop runs; and the harness's names for the engine's configuration errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from _support.probes import StatelessProbe
from svite_search.cli import main
from svite_search.config import config_from_dict
from svite_search.errors import ConfigError
from svite_search.train import Trainer

TINY = {
    "name": "step",
    "data": {"dataset": "digits", "batch_size": 16},
    "model": {"name": "vit_digits", "embed_dim": 16, "depth": 1, "num_heads": 2},
    "train": {"epochs": 1, "warmup_epochs": 0, "lr": 2e-3, "max_steps_per_epoch": 4, "seed": 1, "checkpoint": False},
    "sparsity": {"update_interval": 2, "density": 0.5},
}


def cfg(method: str = "svite", **sections: dict) -> Any:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    raw["method"] = method
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return config_from_dict(raw)


class OrderProbe(StatelessProbe):
    """Records, when the engine steps, what the documented order promises it sees."""

    name = "probe"

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.seen: list[dict[str, Any]] = []

    def step(self) -> None:
        params = [p for p in self.trainer.model.parameters() if p.requires_grad]
        optimizer_steps = {int(s["step"]) for s in self.trainer.optimizer.state.values() if "step" in s}
        self.seen.append({
            "grads": all(p.grad is not None for p in params),  # before the next zero_grad
            "optimizer_steps": optimizer_steps,  # after this iteration's optimizer step
            "trainer_step": self.trainer.state.step,
        })


def _batches(trainer: Trainer, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for images, targets in trainer.data.train:
        out.append((images, targets))
        if len(out) == count:
            return out
    raise AssertionError("not enough batches")


def test_train_step_runs_one_optimizer_step_and_then_the_engine_reading_its_gradients() -> None:
    trainer = Trainer(cfg(), progress=False)
    trainer.components["probe"] = probe = OrderProbe(trainer)
    trainer.train_model.train()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for step, (images, targets) in enumerate(_batches(trainer, 2), start=1):
        loss = trainer.train_step(images, targets)
        assert loss.shape == () and not loss.requires_grad and torch.isfinite(loss)
        assert trainer.state.step == step
        assert probe.seen[-1] == {"grads": True, "optimizer_steps": {step}, "trainer_step": step}
    svite = trainer.components["svite"]
    assert svite.step_count == 2 and svite.stats()["updates"] == 1.0  # ΔT = 2: an update after step 2
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_the_training_loop_is_train_step_over_the_epochs_batches() -> None:
    """One epoch of ``fit`` and the same batches through ``train_step`` leave the same model,
    optimizer and engine state: the loop adds nothing to an iteration but the loss bookkeeping."""
    looped = Trainer(cfg(), progress=False)
    looped.train_one_epoch(0)

    stepped = Trainer(cfg(), progress=False)
    stepped.train_model.train()
    if hasattr(stepped.data.train.sampler, "set_epoch"):
        stepped.data.train.sampler.set_epoch(0)
    for images, targets in _batches(stepped, stepped.steps_per_epoch):
        stepped.train_step(images, targets)

    assert looped.state.step == stepped.state.step == 4
    for (name, a), b in zip(looped.model.state_dict().items(), stepped.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert looped.components["svite"].state_dict()["masks"].keys() == stepped.components["svite"].state_dict()["masks"].keys()
    for name, mask in looped.components["svite"].masks.items():
        assert torch.equal(mask, stepped.components["svite"].masks[name]), name


@pytest.mark.parametrize("method", ["svite", "s2vite"])
def test_an_engine_error_is_reported_under_the_run_configs_key(method: str) -> None:
    # 4 optimizer steps cannot hold 10 updates before t_end · T: only the engine can tell
    with pytest.raises(ConfigError) as err:
        Trainer(cfg(method, sparsity={"updates_per_run": 10}), progress=False)
    assert err.value.field == "sparsity.updates_per_run"
    assert str(err.value).startswith("sparsity.updates_per_run: 10 updates do not fit before step 3.2")


def test_the_cli_names_the_config_key_of_an_engine_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text(
        "method: s2vite\n"
        "model: {name: vit_digits, embed_dim: 16, depth: 1, num_heads: 2}\n"
        "train: {epochs: 1, max_steps_per_epoch: 2, warmup_epochs: 0}\n"
        "sparsity: {updates_per_run: 50}\n"
    )
    assert main(["train", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("sparsity.updates_per_run: 50 updates do not fit before step 1.6 "
                                              "(t_end · total_steps)"), err
    assert not (tmp_path / "out").exists()
