"""Shared machinery of the benchmark suite: one way to time, one way to summarise, one record.

Every benchmark in this folder compares a variant B with a baseline A on the same machine in
the same process. Absolute times on a shared machine drift with the load of other processes, so
the suite never compares two separately measured medians: it warms both up, then runs them
interleaved (A, B in one round, B, A in the next, ...) and summarises the *per-round* ratio B/A
by its median and interquartile range. Drift that lasts longer than one round hits A and B
alike and cancels in the ratio. Absolute times are kept too, labelled with the machine.

What lives here:

* :func:`machine`: CPU model, cores, threads, torch/timm versions, GPU, date, load average;
* :func:`interleave`, :func:`time_call`, :class:`Timings`, :class:`Spread`: the timing core of
  :mod:`svite_search.metrics.latency` (the same one ``measure_latency`` runs on): a baseline and
  any number of variants timed in rotating order, CUDA synchronised around every timing, the
  per-round ratios and their median and quartiles;
* :func:`bench_trainer` and :class:`TrainStep`: a trainer and one iteration of its own
  ``Trainer.train_step`` (on CUDA bf16 autocast where the GPU supports it, else fp16 with a
  gradient scaler; plain fp32 on CPU), so training benchmarks time what training does;
  :class:`PlainStep`: the same loop for peers outside the trainer; :func:`masked_copy`: a model
  masked as S²ViTE leaves it;
* :func:`check`, :func:`table`, :func:`record`: the result record that ``run_all.py`` renders
  into ``reports/benchmarks/README.md``;
* :func:`bench_main`: the command line every ``bench_*.py`` script shares.

Example::

    timings = interleave({"dense": step_dense, "svite": step_svite}, warmup=2, repeats=10,
                         device=torch.device("cpu"))
    timings.ratio("svite").median        # median over rounds of t_svite / t_dense
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from svite_search._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from svite_search.metrics.latency import Spread, Timings, interleave, time_call  # noqa: E402,F401  (the timing core)

REPO = Path(__file__).resolve().parents[1]
REPORT_DIR = REPO / "reports" / "benchmarks"

# ----------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in ``/proc/cpuinfo``; None where that file says nothing."""
    cores: set[tuple[str, str]] = set()
    package = core = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines() + [""]:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                package = value.strip()
            elif key == "core id":
                core = value.strip()
            elif not key and package is not None and core is not None:
                cores.add((package, core))
                package = core = None
    return len(cores) or None


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_info(device: torch.device) -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        return None
    index = device.index if device.type == "cuda" and device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "used_by_benchmark": device.type == "cuda",
    }


def machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing was measured on: without this, an absolute time means nothing."""
    device = torch.device(device)
    return {
        "cpu_model": cpu_model(),
        "cpu_physical_cores": physical_cores(),
        "cpu_logical": os.cpu_count(),
        "cpu_usable": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_label(device),
        "gpu": gpu_info(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average: how many processes wanted a CPU, this one included."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def set_threads(device: torch.device, threads: int | None) -> int:
    """Intra-op threads for the run: on CPU one by default, because on a small shared machine a
    busy sibling core stalls multi-threaded kernels at every barrier (a tiny ViT measured 190 ms
    per batch with 2 threads against 3.5 ms with 1), which buries the effect being measured.
    ``threads=0`` leaves torch's own choice."""
    if threads is None:
        threads = 1 if device.type == "cpu" else 0
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ----------------------------------------------------------------------------- timing


def amp_dtype(device: torch.device) -> torch.dtype:
    """The trainer's autocast dtype on ``device`` (bf16 where supported, else fp16)."""
    from svite_search.train.device import amp_settings

    return amp_settings(device, True).dtype


def inference(model: nn.Module, batch: torch.Tensor, device: torch.device, *, amp: bool) -> Callable[[], Any]:
    """One forward pass of ``model`` in eval mode without autograd (the trainer's autocast on
    CUDA when ``amp``): what serving a batch costs."""
    model.eval()
    dtype = amp_dtype(device)

    def run() -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            return model(batch)

    return run


def amp_default(device: torch.device, amp: bool | None) -> bool:
    """Mixed precision as the trainer decides it: on with CUDA, off on CPU, unless told."""
    return device.type == "cuda" if amp is None else bool(amp and device.type == "cuda")


#: ``update_interval`` that schedules no topology update inside a benchmark's steps
NEVER = 10**9


def bench_trainer(
    model_name: str,
    model_kwargs: Mapping[str, Any],
    *,
    device: torch.device,
    amp: bool,
    method: str = "dense",
    sparsity: Mapping[str, Any] | None = None,
    steps: int = 10_000,
    seed: int = 0,
) -> Any:
    """A :class:`svite_search.train.Trainer` set up for timing its ``train_step``.

    Its model is ``timm.create_model(model_name, **model_kwargs)`` (the run config's ``model:``
    keys), trained with AdamW (lr 5e-4, weight decay 0.05) at a constant learning rate on
    plain cross-entropy, autocast as ``amp`` says (the trainer's dtype: bf16 where supported,
    else fp16 with its gradient scaler); ``method`` and ``sparsity`` (the ``sparsity:`` keys)
    choose the engine, whose schedule spans ``steps`` iterations (``update_interval: NEVER``:
    no update inside the timed steps). The same ``seed`` gives the same initial weights, so
    trainers of one architecture start alike. The caller hands ``train_step`` its own batch;
    the trainer's (tiny, synthetic) data set is never read. Nothing is written.
    """
    from svite_search.config import config_from_dict
    from svite_search.train import Trainer

    cfg = config_from_dict({
        "method": method,
        # the smallest set with a training image left once one image per class is held out
        "data": {"dataset": "synthetic", "synthetic_size": max(16, 2 * model_kwargs.get("num_classes", 10))},
        "model": {"name": model_name, **model_kwargs},
        "train": {"epochs": steps, "max_steps_per_epoch": 1, "lr": 5e-4, "weight_decay": 0.05, "sched": "none",
                  "warmup_epochs": 0, "label_smoothing": 0.0, "device": str(device), "amp": amp,
                  "checkpoint": False, "seed": seed},
        **({"sparsity": dict(sparsity)} if sparsity else {}),
    })
    return Trainer(cfg, None, progress=False)


class TrainStep:
    """One training iteration as :class:`svite_search.train.Trainer` runs it: its own
    ``train_step`` on a fixed batch (forward under its autocast, scaled backward and unscale
    under fp16, the optimizer step, then the engine's ``step()``).

    The engine's ``step()``, if there is one, is timed on its own into :attr:`engine_seconds`
    (the precise figure of the engine's own cost) unless ``time_engine`` is off: timing it
    synchronises CUDA in the middle of the step, which a throughput figure must not include.
    """

    def __init__(self, trainer: Any, images: torch.Tensor, targets: torch.Tensor, *, time_engine: bool = True) -> None:
        self.trainer, self.images, self.targets = trainer, images, targets
        self.model, self.optimizer, self.device = trainer.model, trainer.optimizer, trainer.device
        self.engine = next(iter(trainer.components.values()), None)
        self.engine_seconds: list[float] = []
        if time_engine and self.engine is not None:
            engine_step = self.engine.step

            def timed_step() -> None:
                self.engine_seconds.append(time_call(engine_step, self.device))

            self.engine.step = timed_step  # the trainer calls it where it calls the engine

    def __call__(self) -> None:
        self.trainer.train_step(self.images, self.targets)


class PlainStep:
    """A textbook fp32 iteration (forward, ``zero_grad``, backward, ``optimizer.step()``, then
    ``engine.step()`` if any, timed on its own into :attr:`engine_seconds`): for comparisons
    with peers that do not run in the trainer, so every contender runs the same loop."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                 targets: torch.Tensor, device: torch.device, *, engine: Any = None) -> None:
        self.model, self.optimizer, self.engine = model.train(), optimizer, engine
        self.images, self.targets, self.device = images, targets, device
        self.engine_seconds: list[float] = []

    def __call__(self) -> None:
        loss = F.cross_entropy(self.model(self.images), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.engine is not None:
            self.engine_seconds.append(time_call(self.engine.step, self.device))


@torch.no_grad()
def masked_copy(dense: nn.Module, masks: Sequence[Any]) -> nn.Module:
    """``dense`` with inactive q/k/v rows and fc2 columns zeroed (one
    :class:`~svite_search.engine.structured.BlockMask` per block), as S²ViTE leaves a model."""
    model = copy.deepcopy(dense)
    for block, mask in zip(model.blocks, masks):
        attn = block.attn
        attn.qkv.weight.view(3, attn.num_heads, attn.head_dim, -1)[:, ~mask.heads] = 0
        block.mlp.fc2.weight[:, ~mask.neurons] = 0
    return model.eval()


def random_batch(batch: int, chans: int, pixels: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, chans, pixels, pixels, generator=generator)
    targets = torch.randint(0, classes, (batch,), generator=generator)
    return images.to(device), targets.to(device)


@contextlib.contextmanager
def environment(defaults: Mapping[str, str] = (), remove: Sequence[str] = ()) -> Iterator[None]:
    """Environment variables set (where unset) or removed for the block, restored afterwards, so
    a benchmark run inside another process (a test) leaves that process as it found it."""
    saved = dict(os.environ)
    for key, value in dict(defaults).items():
        os.environ.setdefault(key, value)
    for key in remove:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


#: what `make` exports (quiet telemetry), and no tracking server: studies use their own store
STUDY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg"}


@contextlib.contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...; elapsed()`` -> seconds since the block started."""
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


# ----------------------------------------------------------------------------- the record


def check(
    figure: str,
    value: float | None,
    *,
    goal: str | None,
    met: bool | None,
    shown: str,
    spread: Spread | None = None,
    why_missed: str | None = None,
) -> dict[str, Any]:
    """One headline figure of a benchmark with its goal (None: reported, no goal set).

    ``shown`` is the figure as the report prints it; ``why_missed`` is printed only when the
    goal is missed, so the report always says why a goal was missed and what would close it.
    """
    return {
        "figure": figure,
        "value": value,
        "spread": None if spread is None else [spread.q25, spread.q75],
        "shown": shown,
        "goal": goal,
        "met": met,
        "why_missed": why_missed if met is False else None,
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table for the report, its cells already formatted with their units."""
    return {"title": title, "columns": list(columns), "rows": [[str(c) for c in row] for row in rows]}


def record(
    name: str,
    *,
    title: str,
    what: str,
    how: str,
    checks: list[dict[str, Any]],
    tables: list[dict[str, Any]],
    settings: dict[str, Any],
    machine_info: dict[str, Any],
    tiny: bool,
    wall_s: float,
    notes: Sequence[str] = (),
    **data: Any,
) -> dict[str, Any]:
    """The JSON record of one benchmark run; ``data`` holds its raw figures."""
    goals = [c["met"] for c in checks if c["met"] is not None]
    return {
        "benchmark": name,
        "title": title,
        "what": what,
        "how": how,
        "checks": checks,
        "all_meet_goal": all(goals) if goals else None,
        "tables": tables,
        "notes": list(notes),
        "settings": settings,
        "machine": machine_info | {"load_average_1min_after": load_average()},
        "tiny": tiny,
        "wall_s": wall_s,
        **data,
    }


# ----------------------------------------------------------------------------- formatting


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f} %"


def ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1e3:,.{digits}f} ms"


def secs(seconds: float, digits: int = 2) -> str:
    return f"{seconds:,.{digits}f} s"


def with_iqr(spread: Spread, fmt: Callable[[float], str] = lambda v: f"{v:.3f}") -> str:
    return f"{fmt(spread.median)} (IQR {fmt(spread.q25)}–{fmt(spread.q75)})"


# ----------------------------------------------------------------------------- command line


def bench_main(
    run: Callable[[argparse.Namespace], dict[str, Any]],
    description: str,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The shared command line: ``--tiny`` (smoke size), ``--out FILE`` (JSON record; without it
    the record goes to stdout), ``--device``, ``--threads``, ``--amp/--no-amp``."""
    module = sys.modules.get(run.__module__)
    spec = getattr(module, "__spec__", None)  # under ``python -m`` the script's module is __main__
    prog = f"python -m {spec.name}" if spec is not None else None
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--tiny", action="store_true", help="tiny models, a few repeats (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON record here (default: stdout)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (CPU default 1; 0 = torch's choice)"
    )
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None,
        help="fp16 autocast (default: on with CUDA, as the trainer does; never on CPU)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    args.device = device
    previous_threads = torch.get_num_threads()
    args.threads = set_threads(device, args.threads)
    args.amp = amp_default(device, args.amp)
    try:
        result = run(args)
    finally:  # a caller in the same process (a test) gets its thread count back
        torch.set_num_threads(previous_threads)
    text = json.dumps(result, indent=2, default=str) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        for c in result["checks"]:
            mark = {True: "met", False: "NOT met", None: "no goal"}[c["met"]]
            print(f"  {c['figure']}: {c['shown']}  [{c['goal'] or '-'}: {mark}]", file=sys.stderr)
    return 0
