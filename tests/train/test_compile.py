"""``train.compile``: every engine and the token selector train through ``torch.compile``.

The inductor test compiles real C++ kernels: about a minute on a small shared CPU, so it is
marked slow and compiles one model that has both the structured engine and the token selector. The fast test traces the same models with AOTAutograd only (the graph
capture, hooks and guards that inductor would then lower), in seconds.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from svite_search.config import config_from_dict
from svite_search.train import Trainer

CASES = {
    "dense": {"method": "dense"},
    "svite+tokens": {"method": "svite", "tokens": {"keep_ratio": 0.5}},
    "s2vite": {"method": "s2vite"},
    "s2vite+tokens": {"method": "s2vite", "tokens": {"keep_ratio": 0.5}},
}


def cfg(case: str, **train):
    raw = {
        "name": "compiled",
        "data": {"dataset": "digits", "batch_size": 16},
        "model": {"name": "vit_digits", "embed_dim": 16, "depth": 1, "num_heads": 2},
        "train": {"epochs": 1, "warmup_epochs": 0, "max_steps_per_epoch": 4, "seed": 4, **train},
        "sparsity": {"update_interval": 2},
        **CASES[case],
    }
    return config_from_dict(raw)


def _check(trainer: Trainer, case: str) -> None:
    history = trainer.state.history
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    assert not any("_orig_mod" in key for key in trainer.checkpoint_state()["model"])  # eager keys
    for name in ("svite", "s2vite"):
        if name in trainer.components:
            stats = trainer.components[name].stats()
            assert stats["updates"] >= 1 and stats["skipped_updates"] == 0, stats  # scores were captured
    assert (trainer.selector is not None) == case.endswith("+tokens")


@pytest.mark.parametrize("case", ["dense", "svite+tokens", "s2vite"])
def test_every_engine_traces_through_aot_autograd(case: str) -> None:
    torch._dynamo.reset()
    trainer = Trainer(cfg(case), progress=False)
    trainer.train_model = torch.compile(trainer.eager_train_model, backend="aot_eager")
    trainer.fit()
    _check(trainer, case)


@pytest.mark.slow
def test_train_compile_runs_s2vite_and_tokens_with_inductor(tmp_path: Path) -> None:
    """One inductor compile (about a minute here): S²ViTE (its capture steps switch to the
    eager model) with the token selector; eager random draws, so the two runs agree."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    case = "s2vite+tokens"
    with inductor_config.patch(fallback_random=True):
        compiled = Trainer(cfg(case, compile=True, epochs=2), tmp_path / "run", progress=False)
        assert compiled.train_model is not compiled.eager_train_model
        compiled.fit(stop_after_epochs=1)
    _check(compiled, case)
    eager = Trainer(cfg(case, epochs=2), progress=False)
    eager.fit(stop_after_epochs=1)
    assert compiled.state.history[0]["train_loss"] == pytest.approx(eager.state.history[0]["train_loss"], rel=1e-3)
    # the compiled run's checkpoint resumes eagerly (train.compile may change between runs)
    resumed = Trainer(cfg(case, epochs=2), tmp_path / "run", progress=False)
    resumed.fit()
    assert [h["epoch"] for h in resumed.state.history] == [1, 2]
