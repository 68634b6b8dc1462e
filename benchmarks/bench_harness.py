"""Harness overhead: one training config run directly against the same run as a one-trial study.

What the search harness costs per trial, measured on the same short training config (the digits
preset under SViTE, a few epochs) run two ways in one process, interleaved after warm-up:

* **direct**: :func:`svite_search.train.run_training` in this process, writing its checkpoints
  to a fresh directory (what ``svite-search train`` does);
* **study**: :func:`svite_search.harness.run_search` on a fresh study directory holding a
  one-trial study of that config on the Ray executor with MLflow tracking: the Optuna storage,
  the Ray Tune trial in its own worker process, the MLflow parent and nested runs, the study
  report.

Per round, ``overhead = t_study - t_direct``; its median is the fixed cost of a one-trial study
(goals: at most 4 s on the local executor, 8 s on Ray; with ``--executor ray`` the same study on
the local executor runs in the same rounds), also reported as a fraction of a 30 s trial (goal:
at most 10 %). Ray is started once before the
rounds, as a search starts it once for all its trials; that one-off start is timed and reported
on its own, and so is a one-trial study including it.

Run alone::

    python -m benchmarks.bench_harness --out harness.json
    python -m benchmarks.run_all --only harness
    python -m benchmarks.bench_harness --tiny
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import svite_search.harness as harness
import svite_search.search.local as local_executor
import svite_search.search.ray_executor as ray_executor
from svite_search.search.study import trial_attrs
import svite_search.search.runner as runner
from svite_search.harness import run_search
from svite_search.search import spec_from_dict, trial_config
from svite_search.search.spec import StudySpec
from svite_search.search.study import load_study
from svite_search.train import run_training

from . import benchkit as bk

TRIAL_S = 30.0  # the trial length the goal is stated for
GOAL = 0.10
#: the fixed cost a one-trial study may add over training the config directly, per executor
FIXED_COST_GOAL_S = {"local": 4.0, "ray": 8.0}
WHY_MISSED = (
    "A one-trial study pays, for its single trial, what a longer study shares among all of its "
    "trials: a fresh Ray worker process that imports torch, timm and the package (the 'executor' "
    "phase; the import time is in the notes), a new MLflow sqlite store whose schema is created on "
    "first use ('mlflow tracking'), a new Optuna storage and the study report. In a multi-trial "
    "study Ray reuses the worker (reuse_actors) and the stores exist already: the concurrency "
    "benchmark reports that per-trial figure. Closing it for one-trial studies: create the MLflow "
    "store while the trial trains instead of before it, and keep one Ray instance with a warm "
    "worker across studies instead of a fresh worker per study."
)
WHY_MISSED_LOCAL = (
    "The local executor's fixed cost is the Optuna storage and the MLflow store created for the "
    "study, their first writes, and the study report (matplotlib and the plots); the phases of the "
    "Ray study show each one's share. A busy machine stretches all of them."
)


def study_dict(name: str, epochs: int, *, executor: str = "ray", max_concurrent: int = 1) -> dict[str, Any]:
    """A study whose only trial is one fixed, short training config (no searched values)."""
    return {
        "name": name,
        "method": "svite",
        "data": {"dataset": "digits", "val_fraction": 0.2, "batch_size": 64},
        "model": {"name": "vit_digits"},
        "train": {"epochs": epochs, "lr": 2.0e-3, "warmup_epochs": 1, "seed": 0, "threads": 1},
        "sparsity": {"density": 0.5, "distribution": "erk", "update_interval": 20},
        "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "gmacs", "direction": "minimize"}],
        "search": {"n_trials": 1, "seed": 0},
        "executor": {"kind": executor, "cpus_per_trial": 1, "max_concurrent": max_concurrent},
        "tracking": {"enabled": True},
    }


TRACKER_METHODS = ("start", "trial_started", "trial_epoch", "trial_finished", "close_stale", "end")
WORKER_IMPORTS = "import svite_search, svite_search.train, svite_search.search.ray_executor"


class PhaseClock:
    """Where a study's seconds go: wraps the functions ``run_search`` calls (timing only, the
    behaviour is untouched) and keeps exclusive seconds per phase, so time in the tracker during
    the executor's run counts as tracking, not as the executor."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[str] = []

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self._stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stack.pop()
                elapsed = time.perf_counter() - start
                self.seconds[phase] += elapsed
                if self._stack:
                    self.seconds[self._stack[-1]] -= elapsed
        return timed_call

    @contextlib.contextmanager
    def installed(self) -> Iterator["PhaseClock"]:
        """Wrap the functions for the block; the originals are back afterwards."""
        originals = [
            (runner, "prepare_study", "optuna storage"),
            (harness, "write_study_report", "study report"),
            (ray_executor, "run_ray", "executor"),
            (local_executor, "run_local", "executor"),
        ]
        saved = [(module, name, getattr(module, name)) for module, name, _ in originals]
        saved.append((harness, "make_tracker", harness.make_tracker))
        for module, name, phase in originals:
            setattr(module, name, self.wrap(phase, getattr(module, name)))
        make_tracker = self.wrap("mlflow tracking", harness.make_tracker)

        def tracker_with_clock(handle: Any) -> Any:
            tracker = make_tracker(handle)
            for name in TRACKER_METHODS:
                if hasattr(tracker, name):
                    setattr(tracker, name, self.wrap("mlflow tracking", getattr(tracker, name)))
            return tracker

        harness.make_tracker = tracker_with_clock
        try:
            yield self
        finally:
            for module, name, original in saved:
                setattr(module, name, original)

    def take(self) -> dict[str, float]:
        out, self.seconds = dict(self.seconds), defaultdict(float)
        return out


def fresh_process_import_s() -> float:
    """Seconds a new Python process takes to import what a Ray trial worker imports."""
    with bk.stopwatch() as elapsed:
        subprocess.run([sys.executable, "-c", WORKER_IMPORTS], check=True)
    return elapsed()


def start_ray(num_cpus: int | None = None) -> float:
    """Start a local Ray instance as the harness does for a search; returns the seconds it took."""
    import ray

    with bk.stopwatch() as elapsed:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=tempfile.mkdtemp(prefix="ray"),  # short: unix socket paths have a length limit
        )
    return elapsed()


def run_study(spec: StudySpec, study_dir: Path) -> dict[str, Any]:
    summary = run_search(spec, study_dir, live=False)
    if summary["trials_complete"] != spec.n_trials:
        raise RuntimeError(f"the benchmark study did not complete: {summary}")
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    info = bk.machine("cpu")
    epochs = 1 if args.tiny else args.epochs
    warmup, repeats = (0, 1) if args.tiny else (args.warmup, args.repeats)
    spec = spec_from_dict(study_dict("harness-bench", epochs, executor=args.executor))
    # the Ray run also times the local executor in the same rounds: both fixed costs, one machine state
    local_spec = spec_from_dict(study_dict("harness-bench", epochs, executor="local")) if args.executor == "ray" else None
    cfg = trial_config(spec, {}, name="harness-bench-direct")
    started = time.perf_counter()
    clock = PhaseClock()
    phases: list[dict[str, float]] = []
    # the default MLflow store (sqlite in the study directory), not a server named in the environment
    with bk.environment(bk.STUDY_ENV, remove=["MLFLOW_TRACKING_URI"]), clock.installed(), \
            tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        counter = itertools.count()
        top1: dict[str, list[float]] = {"direct": [], "study": []}

        def direct() -> None:
            result = run_training(cfg, Path(tmp) / f"direct-{next(counter)}", progress=False)
            top1["direct"].append(result["top1"])

        def study() -> None:
            study_dir = Path(tmp) / f"study-{next(counter)}"
            clock.take()
            with bk.stopwatch() as elapsed:
                summary = run_search(spec, study_dir, live=False)
            total = elapsed()
            if summary["trials_complete"] != 1:
                raise RuntimeError(f"the benchmark study did not complete: {summary}")
            top1["study"].append(summary["pareto"][0]["values"][0])
            split = clock.take()
            trial = load_study(study_dir).trials[0]
            split["training (in the trial)"] = float(trial_attrs(trial).get("wall_s") or 0.0)
            split["executor"] = split.get("executor", 0.0) - split["training (in the trial)"]
            split["other"] = total - sum(split.values())
            phases.append(split)

        def study_local() -> None:
            study_dir = Path(tmp) / f"study-local-{next(counter)}"
            clock.take()
            summary = run_search(local_spec, study_dir, live=False)
            clock.take()  # its phases are not the Ray study's
            if summary["trials_complete"] != 1:
                raise RuntimeError(f"the benchmark study did not complete: {summary}")

        arms: dict[str, Callable[[], None]] = {"direct": direct, "study": study}
        if local_spec is not None:
            arms["study_local"] = study_local
        ray_start_s = start_ray() if args.executor == "ray" else 0.0
        try:
            timings = bk.interleave(arms, warmup=warmup, repeats=repeats, device=args.device)
        finally:
            ray.shutdown()
    import_s = None if args.tiny or args.executor != "ray" else fresh_process_import_s()
    overhead = bk.Spread.of([s - d for d, s in zip(timings.seconds["direct"], timings.seconds["study"])])
    local_overhead = (bk.Spread.of([s - d for d, s in zip(timings.seconds["direct"], timings.seconds["study_local"])])
                      if local_spec is not None else None)
    fraction = overhead.scaled(1.0 / TRIAL_S)
    direct_s = timings.spread("direct")
    study_s = timings.spread("study")
    cold = overhead.median + ray_start_s
    timed_phases = phases[-repeats:]
    phase_median = {k: bk.Spread.of([p.get(k, 0.0) for p in timed_phases]).median for k in timed_phases[0]}
    fixed = {args.executor: overhead}
    if local_overhead is not None:
        fixed["local"] = local_overhead
    fixed_checks, share_checks = [], []
    for executor, spread in sorted(fixed.items()):
        why = WHY_MISSED if executor == "ray" else WHY_MISSED_LOCAL
        median, iqr = bk.secs(spread.median, 1), f"IQR {bk.secs(spread.q25, 1)}–{bk.secs(spread.q75, 1)}"
        goal_s = FIXED_COST_GOAL_S[executor]
        fixed_checks.append(bk.check(
            f"fixed cost of a one-trial study over training it directly ({executor} executor, MLflow tracking)",
            spread.median, spread=spread, goal=f"≤ {goal_s:g} s", met=spread.median <= goal_s,
            shown=f"{median} ({iqr})", why_missed=why))
        share = spread.scaled(1.0 / TRIAL_S)
        share_checks.append(bk.check(
            f"per-trial overhead of a one-trial study ({executor} executor, MLflow tracking), as a fraction of "
            f"a {TRIAL_S:.0f} s trial",
            share.median, spread=share, goal=f"≤ {GOAL:.0%}", met=share.median <= GOAL,
            shown=f"{bk.pct(share.median)} ({median}, {iqr})", why_missed=why))
    checks = fixed_checks + share_checks
    tables = [
        bk.table(
            f"Direct training vs a one-trial study (digits, SViTE, {epochs} epochs, {repeats} rounds)",
            ["path", "wall time", "overhead per trial", f"fraction of a {TRIAL_S:.0f} s trial"],
            [
                ["direct: run_training in-process", bk.with_iqr(direct_s, lambda v: f"{v:.1f}") + " s", "—", "—"],
                [f"study: run_search, {args.executor} executor, MLflow",
                 bk.with_iqr(study_s, lambda v: f"{v:.1f}") + " s",
                 bk.with_iqr(overhead, lambda v: f"{v:.1f}") + " s", bk.pct(fraction.median)],
                *([["study: run_search, local executor, MLflow", bk.with_iqr(timings.spread("study_local"),
                                                                             lambda v: f"{v:.1f}") + " s",
                    bk.with_iqr(local_overhead, lambda v: f"{v:.1f}") + " s", bk.pct(local_overhead.median / TRIAL_S)]]
                  if local_overhead is not None else []),
                ["one-off: start Ray (once per search)", bk.secs(ray_start_s, 1), "—", "—"],
                ["one-trial study from cold (overhead + Ray start)", "—", bk.secs(cold, 1), bk.pct(cold / TRIAL_S)],
            ],
        ),
        bk.table(
            "Where a one-trial study's seconds go (median over the timed rounds; exclusive times)",
            ["phase", "seconds"],
            [[k, f"{v:.2f}"] for k, v in sorted(phase_median.items(), key=lambda kv: -kv[1])],
        ),
    ]
    shown_top1 = {k: ", ".join(f"{v:.2f}" for v in values) for k, values in top1.items()}
    notes = ([] if local_spec is None else
             ["The local-executor study runs in the same rounds while the Ray instance is up (idle), as "
              "the rounds interleave; on 2 cores its idle processes can add a little to the local figure."])
    notes += [f"Top-1 of the runs (same config and seed, so they agree): direct {shown_top1['direct']}; "
             f"study {shown_top1['study']}."]
    if import_s is not None:
        notes.insert(0, f"A fresh Python process takes {bk.secs(import_s, 1)} to import what a Ray trial worker "
                     f"imports (`{WORKER_IMPORTS}`): a one-trial study pays it once per trial, inside 'executor'.")
    return bk.record(
        "harness",
        title="Harness overhead: direct training vs a one-trial Ray study with MLflow",
        what="What running a training config as a search trial costs on top of training it directly.",
        how="The same config run by run_training in-process and as a one-trial study (run_search, Ray "
        "executor, MLflow tracking, report) on fresh directories, interleaved after warm-up; "
        "overhead = per-round t_study − t_direct (with the Ray executor, the same study on the local "
        "executor runs in the same rounds). Ray started once beforehand, timed separately. "
        "Phases are timed by wrapping the functions run_search calls.",
        checks=checks,
        tables=tables,
        notes=notes,
        settings={"executor": args.executor, "epochs": epochs, "warmup_rounds": warmup, "timed_rounds": repeats,
                  "trial_s": TRIAL_S, "cpus_per_trial": 1, "threads": 1},
        machine_info=info,
        tiny=args.tiny,
        wall_s=time.perf_counter() - started,
        timings=timings.to_dict(),
        overhead_s=overhead.to_dict(),
        local_overhead_s=local_overhead.to_dict() if local_overhead is not None else None,
        overhead_fraction=fraction.to_dict(),
        phases_s=timed_phases,
        ray_start_s=ray_start_s,
        worker_import_s=import_s,
        top1=top1,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the short training config")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--executor", choices=("ray", "local"), default="ray",
        help="the study's executor; local skips Ray (a quick smoke test of everything else)",
    )


def main(argv: list[str] | None = None) -> int:
    return bk.bench_main(run, __doc__.split("\n\n")[0], argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
