"""Wall-clock inference latency, measured honestly.

FLOPs only promise a speed-up; these helpers measure one. Every figure comes with what it was
measured under (batch size, intra-op thread count, device), because a latency means nothing
without them. Each measurement warms up first (allocator, kernel selection, caches), times
single forward passes, and reports the median with the interquartile range as its spread.

Two clocks (``timer``): ``wall`` (default) is ``time.perf_counter`` with CUDA synchronised
before and after each pass, what a caller waiting for the result sees, launch overhead included;
``cuda_events`` records CUDA events around the pass on the current stream and reads the GPU's
elapsed time, which leaves out the host's wait for the synchronisation. ``amp`` runs the passes
under autocast in that dtype (how a GPU serves a model: bf16 or fp16, weights left in fp32).

:func:`compare_latency` interleaves two models (A, B, A, B, ...) after warm-up, so drift in
machine load or clock speed hits both alike, and summarises the per-pair ratio B/A: its median
is the robust speed-up figure, ``time_saving = 1 - ratio``.

Both stand on one timing core, public for anything else that times calls (the benchmark suite
does): :func:`time_call` times one call with either clock, :func:`interleave` warms up any
number of contenders and times one call of each per round in rotating order, and
:class:`Timings` / :class:`Spread` give the per-round ratios and their median and quartiles.

Example::

    result = compare_latency(dense, slim, (3, 224, 224), batch_size=32, warmup=2, repeats=7)
    print(f"slim takes {result.ratio_median:.2f} of dense's time "
          f"(IQR {result.ratio_q25:.2f}-{result.ratio_q75:.2f}), {result.threads} threads")

    timings = interleave({"dense": lambda: dense(x), "slim": lambda: slim(x)}, warmup=2, repeats=10)
    timings.ratio("slim").median         # median over rounds of t_slim / t_dense
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import UserInputError


TIMERS = ("wall", "cuda_events")


def _check_timer(device: torch.device, timer: str) -> None:
    if timer not in TIMERS:
        raise UserInputError(f"timer={timer!r} is not one of {', '.join(TIMERS)}")
    if timer == "cuda_events" and device.type != "cuda":
        raise UserInputError(f"timer='cuda_events' needs a CUDA device, not {device}")


def _check_counts(warmup: int, repeats: int) -> None:
    if warmup < 0:
        raise UserInputError(f"warmup={warmup} must be >= 0")
    if repeats < 1:
        raise UserInputError(f"repeats={repeats} must be >= 1")


def time_call(fn: Callable[[], Any], device: str | torch.device = "cpu", timer: str = "wall") -> float:
    """Seconds one call of ``fn`` takes on ``device``.

    ``wall``: ``time.perf_counter`` with CUDA synchronised before and after (without it a GPU
    timing measures only the kernel launches). ``cuda_events``: CUDA events recorded around the
    call on the current stream, the GPU's own elapsed time.
    """
    device = torch.device(device)
    _check_timer(device, timer)
    if timer == "cuda_events":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Spread:
    """Median and spread of a sample (the median is the figure; quartiles say how sure it is)."""

    median: float
    q25: float
    q75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no values to summarise")
        return cls(statistics.median(values), _quantile(values, 0.25), _quantile(values, 0.75), min(values),
                   max(values), len(values))

    def scaled(self, factor: float) -> "Spread":
        return Spread(self.median * factor, self.q25 * factor, self.q75 * factor, self.min * factor,
                      self.max * factor, self.n)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Timings:
    """Seconds per call of each contender, one entry per round; the first contender is the baseline."""

    seconds: dict[str, list[float]]

    @property
    def baseline(self) -> str:
        return next(iter(self.seconds))

    def ratios(self, name: str, over: str | None = None) -> list[float]:
        """Per-round ``t_name / t_over`` (``over`` defaults to the baseline)."""
        over = over or self.baseline
        return [b / a for a, b in zip(self.seconds[over], self.seconds[name])]

    def ratio(self, name: str, over: str | None = None) -> Spread:
        return Spread.of(self.ratios(name, over))

    def spread(self, name: str) -> Spread:
        return Spread.of(self.seconds[name])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": {k: Spread.of(v).to_dict() for k, v in self.seconds.items()}}
        out["ratio_over_" + self.baseline] = {
            k: self.ratio(k).to_dict() for k in self.seconds if k != self.baseline
        }
        return out


def interleave(
    contenders: Mapping[str, Callable[[], Any]],
    *,
    warmup: int,
    repeats: int,
    device: str | torch.device = "cpu",
    timer: str = "wall",
) -> Timings:
    """Warm every contender up, then time one call of each per round, rotating the order.

    Round ``i`` starts at contender ``i mod n`` (two contenders: AB, BA, AB, ...), so no
    contender always runs first, on a cache another has just warmed, or last, when a burst of
    load from elsewhere tends to arrive; drift that lasts longer than a round hits all of them
    alike and cancels in the per-round ratio. A baseline shared by several variants is timed
    once per round, which makes an n-way comparison cheaper than n - 1 separate pairs.
    """
    _check_counts(warmup, repeats)
    device = torch.device(device)
    _check_timer(device, timer)
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        start = i % len(names)
        for name in names[start:] + names[:start]:
            seconds[name].append(time_call(contenders[name], device, timer))
    return Timings(seconds)



@dataclass(frozen=True)
class LatencyResult:
    """Seconds per forward pass of one batch."""

    median_s: float
    q25_s: float
    q75_s: float
    min_s: float
    max_s: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int
    device: str
    timer: str = "wall"
    amp: str | None = None  # autocast dtype of the passes, None for the model's own dtype

    @property
    def spread_s(self) -> float:
        """Interquartile range of the timings."""
        return self.q75_s - self.q25_s

    @property
    def throughput(self) -> float:
        """Images per second at the median."""
        return self.batch_size / self.median_s

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(spread_s=self.spread_s, throughput=self.throughput)
        return out


@dataclass(frozen=True)
class LatencyComparison:
    """A against B, measured interleaved. ``ratio_*`` summarise the per-pair ratio B / A."""

    a: LatencyResult
    b: LatencyResult
    ratio_median: float
    ratio_q25: float
    ratio_q75: float

    @property
    def time_saving(self) -> float:
        """Share of A's time that B saves (``1 - ratio_median``)."""
        return 1.0 - self.ratio_median

    @property
    def speedup(self) -> float:
        """How many times faster B is than A (``1 / ratio_median``)."""
        return 1.0 / self.ratio_median

    @property
    def batch_size(self) -> int:
        return self.a.batch_size

    @property
    def threads(self) -> int:
        return self.a.threads

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "ratio_median": self.ratio_median,
            "ratio_q25": self.ratio_q25,
            "ratio_q75": self.ratio_q75,
            "time_saving": self.time_saving,
            "speedup": self.speedup,
            "batch_size": self.batch_size,
            "threads": self.threads,
        }


def _make_input(
    example: torch.Tensor | Sequence[int], batch_size: int | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    if isinstance(example, torch.Tensor):
        if batch_size is not None and example.shape[0] != batch_size:
            raise UserInputError(
                f"example batch has {example.shape[0]} samples but batch_size={batch_size}"
            )
        return example.to(device=device)
    shape = tuple(int(s) for s in example)
    if not shape or any(s < 1 for s in shape):
        raise UserInputError(f"input shape {shape!r} must be positive sizes of one sample, e.g. (3, 224, 224)")
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size or 1, *shape), generator=generator).to(device=device, dtype=dtype)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (restored afterwards); yields the count in use."""
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise UserInputError(f"threads={threads} must be >= 1")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    return torch.device(device)


def _forward_pass(model: nn.Module, x: torch.Tensor, device: torch.device, amp: torch.dtype | None):
    """One forward pass of ``model`` on ``x``, under autocast in ``amp`` when given."""

    def forward() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            model(x)

    return forward


def _result(times: list[float], *, warmup: int, batch_size: int, threads: int, device: torch.device,
            timer: str = "wall", amp: torch.dtype | None = None) -> LatencyResult:
    spread = Spread.of(times)
    return LatencyResult(
        median_s=spread.median,
        q25_s=spread.q25,
        q75_s=spread.q75,
        min_s=spread.min,
        max_s=spread.max,
        repeats=spread.n,
        warmup=warmup,
        batch_size=batch_size,
        threads=threads,
        device=str(device),
        timer=timer,
        amp=str(amp).removeprefix("torch.") if amp is not None else None,
    )


def measure_latency(
    model: nn.Module,
    example: torch.Tensor | Sequence[int],
    *,
    batch_size: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
    threads: int | None = None,
    timer: str = "wall",
    amp: torch.dtype | None = None,
) -> LatencyResult:
    """Median seconds per forward pass of ``model`` in eval mode without autograd.

    ``example`` is either one input batch (its first dimension is the batch size) or the shape
    of one sample, such as ``(3, 224, 224)``, from which a seeded random batch of
    ``batch_size`` (default 1) is drawn. ``device`` defaults to the model's; the model is moved
    there. ``threads`` sets torch's intra-op threads for the measurement only; ``timer`` and
    ``amp`` as the module docstring says.
    """
    _check_counts(warmup, repeats)
    device = _resolve_device(model, device)
    _check_timer(device, timer)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    model = model.to(device)
    x = _make_input(example, batch_size, device, dtype)
    was_training = model.training
    model.eval()
    try:
        with _threads(threads) as used, torch.inference_mode():
            timings = interleave({"model": _forward_pass(model, x, device, amp)}, warmup=warmup, repeats=repeats,
                                 device=device, timer=timer)
    finally:
        model.train(was_training)
    return _result(timings.seconds["model"], warmup=warmup, batch_size=int(x.shape[0]), threads=used, device=device,
                   timer=timer, amp=amp)


def compare_latency(
    model_a: nn.Module,
    model_b: nn.Module,
    example: torch.Tensor | Sequence[int],
    *,
    batch_size: int | None = None,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
    threads: int | None = None,
    timer: str = "wall",
    amp: torch.dtype | None = None,
) -> LatencyComparison:
    """Time A and B alternately on the same input and summarise the ratio B / A per pair.

    Both warm up first (``warmup`` passes each, alternating), then ``repeats`` pairs are timed;
    the order within a pair alternates too (AB, BA, AB, ...) so neither model always runs
    on a cache the other has just warmed.
    """
    _check_counts(warmup, repeats)
    device = _resolve_device(model_a, device)
    _check_timer(device, timer)
    param = next(model_a.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    model_a, model_b = model_a.to(device), model_b.to(device)
    x = _make_input(example, batch_size, device, dtype)
    flags = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    passes = {"a": _forward_pass(model_a, x, device, amp), "b": _forward_pass(model_b, x, device, amp)}
    try:
        with _threads(threads) as used, torch.inference_mode():
            timings = interleave(passes, warmup=warmup, repeats=repeats, device=device, timer=timer)
    finally:
        model_a.train(flags[0])
        model_b.train(flags[1])
    ratio = timings.ratio("b")
    common = dict(warmup=warmup, batch_size=int(x.shape[0]), threads=used, device=device, timer=timer, amp=amp)
    return LatencyComparison(
        a=_result(timings.seconds["a"], **common),
        b=_result(timings.seconds["b"], **common),
        ratio_median=ratio.median,
        ratio_q25=ratio.q25,
        ratio_q75=ratio.q75,
    )
