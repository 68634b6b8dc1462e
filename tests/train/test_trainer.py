"""The trainer: seeded determinism and exact resume on CPU, result keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from svite_search.config import config_from_dict
from svite_search.train import Trainer, run_training
from svite_search.train.checkpoint import load_checkpoint

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "batch_size": 32},
    "model": {"name": "vit_digits", "embed_dim": 32, "depth": 2, "num_heads": 2},
    "train": {"epochs": 4, "warmup_epochs": 1, "lr": 2e-3, "max_steps_per_epoch": 4, "seed": 3},
    "sparsity": {"update_interval": 3},
}


def tiny(**sections: dict) -> object:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return config_from_dict(raw)


def test_same_seed_same_metrics() -> None:
    cfg = tiny(train={"epochs": 2})
    a = run_training(cfg, progress=False)
    b = run_training(cfg, progress=False)
    assert a["history"] == [{**h} for h in b["history"]]
    assert a["top1"] == b["top1"]


@pytest.mark.parametrize("method", ["dense", "svite"])
def test_resume_continues_exactly(tmp_path: Path, method: str) -> None:
    cfg = tiny(method=method)
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.fit()

    interrupted = tmp_path / "interrupted"
    first = Trainer(cfg, interrupted, progress=False)
    first.fit(stop_after_epochs=2)
    assert load_checkpoint(interrupted / "last.pt")["epoch"] == 2
    resumed = Trainer(cfg, interrupted, progress=False)
    result = resumed.fit()

    assert result["epochs"] == 4
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert straight.state.history == resumed.state.history


def test_result_reports_accuracy_compute_and_sparsity() -> None:
    result = run_training(tiny(method="svite", train={"epochs": 1}), progress=False)
    for key in ("top1", "top1_best", "top1_final", "top5", "gmacs", "dense_gmacs", "flops_savings",
                "density", "params_nonzero", "params_total", "epochs", "wall_s"):
        assert key in result, key
    assert result["density"] < 0.75 and 0 < result["flops_savings"] < 1
    assert result["params_nonzero"] < result["params_total"]


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    from svite_search.errors import UserInputError

    Trainer(tiny(train={"epochs": 1}), tmp_path, progress=False).fit()
    with pytest.raises(UserInputError, match="different config"):
        Trainer(tiny(train={"epochs": 1, "lr": 1e-2}), tmp_path, progress=False).fit()


def test_non_finite_loss_stops_the_run() -> None:
    from svite_search.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        run_training(tiny(train={"epochs": 1, "lr": 1e3, "weight_decay": 1e3, "warmup_epochs": 0, "sched": "none"}), progress=False)
