"""Latency helpers and the timing core under them: what they record, in which order they run
the contenders, how they summarise, and how they treat the model (never timing itself)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from svite_search.errors import UserInputError
from svite_search.metrics.latency import Spread, Timings, compare_latency, interleave, measure_latency, time_call


class Counting(nn.Module):
    """A small model that counts its forward passes and remembers the modes it ran in."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.calls = 0
        self.modes: set[tuple[bool, bool]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.modes.add((self.training, torch.is_grad_enabled()))
        return self.linear(x)


def test_measure_latency_records_its_conditions() -> None:
    model = Counting().train()
    threads_before = torch.get_num_threads()
    result = measure_latency(model, (8,), batch_size=4, warmup=2, repeats=5, threads=1)
    assert model.calls == 7  # warm-up passes are run but not timed
    assert model.modes == {(False, False)}  # eval mode, no autograd
    assert model.training  # mode restored
    assert torch.get_num_threads() == threads_before
    assert (result.batch_size, result.threads, result.repeats, result.warmup, result.device) == (4, 1, 5, 2, "cpu")
    assert result.min_s <= result.q25_s <= result.median_s <= result.q75_s <= result.max_s
    assert result.spread_s >= 0 and result.throughput == pytest.approx(4 / result.median_s)
    assert set(result.to_dict()) >= {"median_s", "spread_s", "batch_size", "threads", "device", "throughput"}


def test_measure_latency_takes_an_example_batch() -> None:
    result = measure_latency(Counting(), torch.randn(3, 8), warmup=0, repeats=1)
    assert result.batch_size == 3 and result.repeats == 1
    with pytest.raises(UserInputError, match="batch_size"):
        measure_latency(Counting(), torch.randn(3, 8), batch_size=2)


@pytest.mark.parametrize("kwargs", [dict(repeats=0), dict(warmup=-1), dict(threads=0)])
def test_bad_settings_are_user_errors(kwargs) -> None:
    with pytest.raises(UserInputError):
        measure_latency(Counting(), (8,), **kwargs)


def test_compare_latency_interleaves_and_pairs() -> None:
    a, b = Counting(), Counting()
    order: list[str] = []
    a.register_forward_hook(lambda *_: order.append("a"))
    b.register_forward_hook(lambda *_: order.append("b"))
    result = compare_latency(a, b, (8,), batch_size=2, warmup=1, repeats=4, threads=1)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert a.calls == b.calls == 5
    assert result.a.repeats == result.b.repeats == 4
    assert result.batch_size == 2 and result.threads == 1
    assert result.ratio_q25 <= result.ratio_median <= result.ratio_q75
    assert result.time_saving == pytest.approx(1 - result.ratio_median)
    assert result.speedup == pytest.approx(1 / result.ratio_median)
    assert result.to_dict()["b"]["batch_size"] == 2


def test_amp_runs_the_timed_passes_under_autocast() -> None:
    model = Counting()
    seen: set[torch.dtype] = set()
    model.linear.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    result = measure_latency(model, (8,), batch_size=2, warmup=1, repeats=2, amp=torch.bfloat16)
    assert seen == {torch.bfloat16} and result.amp == "bfloat16" and result.timer == "wall"
    assert next(model.parameters()).dtype == torch.float32  # the weights are left alone
    assert compare_latency(Counting(), Counting(), (8,), warmup=0, repeats=1, amp=torch.bfloat16).a.amp == "bfloat16"


def test_cuda_event_timing_needs_a_cuda_device() -> None:
    with pytest.raises(UserInputError, match="cuda_events.*needs a CUDA device"):
        measure_latency(Counting(), (8,), timer="cuda_events", device="cpu")
    with pytest.raises(UserInputError, match="timer="):
        compare_latency(Counting(), Counting(), (8,), timer="stopwatch")


def test_interleave_warms_up_then_rotates_the_order() -> None:
    calls: list[str] = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = interleave(contenders, warmup=1, repeats=4)
    assert calls == list("abc" "abc" "bca" "cab" "abc")  # warm-up, then rounds starting at a, b, c, a
    assert timings.baseline == "a" and all(len(v) == 4 for v in timings.seconds.values())
    assert all(t >= 0 for v in timings.seconds.values() for t in v)
    with pytest.raises(UserInputError, match="repeats"):
        interleave(contenders, warmup=0, repeats=0)
    with pytest.raises(UserInputError, match="cuda_events.*needs a CUDA device"):
        interleave(contenders, warmup=0, repeats=1, timer="cuda_events")


def test_time_call_calls_once_and_checks_its_clock() -> None:
    calls: list[int] = []
    assert time_call(lambda: calls.append(1)) >= 0 and calls == [1]
    with pytest.raises(UserInputError, match="timer="):
        time_call(lambda: None, "cpu", timer="stopwatch")


def test_timings_ratios_are_per_round_and_spreads_interpolate() -> None:
    timings = Timings({"a": [1.0, 2.0, 4.0, 1.0], "b": [2.0, 3.0, 2.0, 3.0]})
    assert timings.ratios("b") == [2.0, 1.5, 0.5, 3.0]
    assert timings.ratio("b") == Spread(median=1.75, q25=1.25, q75=2.25, min=0.5, max=3.0, n=4)
    assert timings.ratios("a", over="b") == [0.5, 2 / 3, 2.0, 1 / 3]
    assert Spread.of([1.0, 2.0, 3.0, 4.0]) == Spread(2.5, 1.75, 3.25, 1.0, 4.0, 4)  # numpy's linear quantiles
    assert Spread.of([5.0]) == Spread(5.0, 5.0, 5.0, 5.0, 5.0, 1)
    assert timings.to_dict()["ratio_over_a"]["b"]["median"] == 1.75
    with pytest.raises(ValueError):
        Spread.of([])
