"""The training loss is read a step late (no host wait on the GPU mid-step) and still stops a
run at a non-finite loss before anything is checkpointed."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from svite_search.config import config_from_dict
from svite_search.train import NonFiniteLossError, Trainer
from svite_search.train.loss_watch import LossWatch


class Stop(Exception):
    pass


def _raise(value: float, step: int) -> None:
    raise Stop(f"{value} at step {step}")


def test_each_loss_is_read_one_step_later_and_averaged() -> None:
    watch = LossWatch(torch.device("cpu"), distributed=False, on_non_finite=_raise)
    watch.push(torch.tensor(1.0), step=1, batch=2)
    assert watch.reads == 0  # nothing read while step 1's work would still be queued
    watch.push(torch.tensor(4.0, requires_grad=True) * 1, step=2, batch=1)
    assert watch.reads == 1 and watch.last == 1.0
    assert watch.flush() == pytest.approx((1.0 * 2 + 4.0) / 3)
    assert watch.reads == 2 and watch.flush() == pytest.approx(2.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_is_reported_with_its_own_step(bad: float) -> None:
    watch = LossWatch(torch.device("cpu"), distributed=False, on_non_finite=_raise)
    watch.push(torch.tensor(1.0), step=1, batch=1)
    watch.push(torch.tensor(bad), step=2, batch=1)
    with pytest.raises(Stop, match="at step 2"):
        watch.push(torch.tensor(1.0), step=3, batch=1)
    last = LossWatch(torch.device("cpu"), distributed=False, on_non_finite=_raise)
    last.push(torch.tensor(bad), step=7, batch=1)
    with pytest.raises(Stop, match="at step 7"):
        last.flush()


def test_the_trainer_stops_before_checkpointing_an_epoch_with_a_non_finite_last_step(tmp_path: Path) -> None:
    cfg = config_from_dict({
        "data": {"dataset": "digits", "batch_size": 32},
        "model": {"name": "vit_digits", "embed_dim": 16, "depth": 1, "num_heads": 2},
        "train": {"epochs": 2, "warmup_epochs": 0, "max_steps_per_epoch": 2, "sched": "none"},
    })
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.fit(stop_after_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()

    head = trainer.model.head
    calls = {"n": 0}

    def poison_second_step(module, args, output):  # a NaN in the loss of the epoch's last step
        calls["n"] += 1
        return output * math.nan if calls["n"] == 2 else output

    head.register_forward_hook(poison_second_step)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 4"):
        trainer.fit()
    assert (tmp_path / "last.pt").read_bytes() == before  # the epoch-1 checkpoint is untouched
