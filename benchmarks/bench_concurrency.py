"""Concurrency: trials per hour of the quickstart study with 1 against 2 concurrent trials.

The quickstart study (``studies/quickstart.yaml``: digits, Ray executor, one CPU per trial) is run
on fresh study directories with ``executor.max_concurrent`` 1 and 2, interleaved (1, 2 in one
round, 2, 1 in the next) in one process with Ray started once beforehand, as a search starts it.
To fit the suite's time budget each study runs the first ``n`` trials of the quickstart (its
enqueued dense, SViTE and S²ViTE+SViTE+ trials, then sampled ones) with fewer epochs than the
quickstart's 20 (``--set train.epochs=...``); the trials per hour stated are for those shortened
trials. The sampler is switched to random for this benchmark: with the same seed it gives
the same trial numbers the same parameters at any concurrency (TPE's constant liar, on with
concurrency, would not), so both arms run the same work, which the record checks.

trials per hour = finished trials / wall time of ``run_search`` x 3600; per round the ratio
(2 concurrent) / (1 concurrent) is the speed-up, summarised by median and spread. On a
machine with 2 cores the ideal is 2.0; fixed per-study costs (storage, report), the driver's
own work, a second Ray worker process to start, and other processes on the machine keep it
below. No goal is set by the issue: the figures are reported.

Run alone::

    python -m benchmarks.bench_concurrency --out concurrency.json
    python -m benchmarks.run_all --only concurrency
    python -m benchmarks.bench_concurrency --tiny
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from svite_search.harness import run_search
from svite_search.search import load_spec
from svite_search.search.study import load_study, trial_attrs

from . import benchkit as bk
from .bench_harness import start_ray

QUICKSTART = bk.REPO / "studies" / "quickstart.yaml"


def quickstart(trials: int, epochs: int, concurrent: int, executor: str = "ray") -> Any:
    """The quickstart study, shortened; the random sampler draws the same parameters for the
    same trial numbers whatever the concurrency (TPE's constant liar would not), so both arms
    run the same trials."""
    return load_spec(QUICKSTART, overrides=[
        f"search.n_trials={trials}", f"train.epochs={epochs}", f"train.warmup_epochs={min(2, epochs)}",
        "search.sampler=random", f"executor.kind={executor}", f"executor.max_concurrent={concurrent}",
    ])


def trials_of(study_dir: Path) -> list[Any]:
    return sorted(load_study(study_dir).trials, key=lambda t: t.number)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    info = bk.machine("cpu")
    trials, epochs = (2, 1) if args.tiny else (args.trials, args.epochs)
    repeats = 1 if args.tiny else args.repeats
    specs = {f"{n}_concurrent": quickstart(trials, epochs, n, args.executor) for n in (1, 2)}
    started = time.perf_counter()
    params: dict[str, list[Any]] = {name: [] for name in specs}
    training_s: dict[str, list[float]] = {name: [] for name in specs}  # summed over a study's trials
    with bk.environment(bk.STUDY_ENV, remove=["MLFLOW_TRACKING_URI"]), \
            tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        counter = itertools.count()

        def study(name: str):
            def go() -> None:
                study_dir = Path(tmp) / f"{name}-{next(counter)}"
                summary = run_search(specs[name], study_dir, live=False)
                if summary["trials_complete"] != trials:
                    raise RuntimeError(f"the benchmark study did not complete: {summary}")
                done = trials_of(study_dir)
                params[name].append([t.params for t in done])
                training_s[name].append(sum(float(trial_attrs(t).get("wall_s") or 0.0) for t in done))
            return go

        ray_start_s = start_ray() if args.executor == "ray" else 0.0
        try:
            if not args.tiny:  # one short trial, so driver-side imports are not charged to round 1
                run_search(quickstart(1, 1, 1, args.executor), Path(tmp) / "warmup", live=False)
            timings = bk.interleave({name: study(name) for name in specs}, warmup=0, repeats=repeats,
                                    device=args.device)
        finally:
            ray.shutdown()
    per_hour = {name: [trials / s * 3600 for s in secs] for name, secs in timings.seconds.items()}
    speedup = bk.Spread.of([b / a for a, b in zip(per_hour["1_concurrent"], per_hour["2_concurrent"])])
    same_trials = all(p == params["1_concurrent"][0] for runs in params.values() for p in runs)
    # one trial at a time: what the harness adds per trial when a study has several
    sequential = bk.Spread.of([(wall - train) / trials for wall, train in
                               zip(timings.seconds["1_concurrent"], training_s["1_concurrent"])])
    ideal = min(2, info["cpu_usable"])
    checks = [bk.check(
        f"trials per hour, 2 vs 1 concurrent trials ({trials} quickstart trials of {epochs} epochs)",
        speedup.median, spread=speedup, goal=None, met=None,
        shown=f"{bk.with_iqr(speedup, lambda v: f'{v:.2f}')}x (ideal on {info['cpu_usable']} CPUs: {ideal}x)",
    )]
    rows = []
    for name, values in per_hour.items():
        wall = timings.spread(name)
        train = bk.Spread.of(training_s[name])
        rows.append([name.replace("_", " "), bk.with_iqr(wall, lambda v: f"{v:.0f}") + " s",
                     f"{train.median:.0f} s", bk.with_iqr(bk.Spread.of(values), lambda v: f"{v:,.0f}")])
    tables = [bk.table(
        f"Quickstart study, first {trials} trials at {epochs} epochs, {args.executor} executor, 1 CPU per trial "
        f"({repeats} rounds)",
        ["concurrency", "study wall time", "training inside the trials (sum)", "trials per hour"],
        rows,
    )]
    notes = [
        "Trials per hour are for these shortened trials on this machine; the quickstart's 20-epoch "
        "trials take longer, so their rate is lower and the fixed per-trial costs weigh less.",
        f"Harness time per trial with one trial at a time in a {trials}-trial study (study wall time minus "
        f"the trials' training, per trial): {bk.with_iqr(sequential, lambda v: f'{v:.1f}')} s.",
        f"Both arms ran the same trial parameters (random sampler, same seed): {same_trials}.",
        f"Ray start (once, before the rounds): {bk.secs(ray_start_s, 1)}.",
    ]
    load = info["load_average_1min"] or 0.0  # before the studies: this process and everything else
    if load > info["cpu_usable"] - 0.5:
        notes.append(
            f"The machine was busy before the studies started (1-minute load average {load:.1f} on "
            f"{info['cpu_usable']} CPUs): a second trial found no idle core, so this speed-up understates "
            "what two concurrent trials give on an otherwise idle machine."
        )
    return bk.record(
        "concurrency",
        title="Concurrency: quickstart trials per hour, 1 vs 2 concurrent trials",
        what="How much a second concurrent Ray trial raises the quickstart study's throughput on this machine.",
        how="Fresh quickstart studies with max_concurrent 1 and 2, interleaved in rotating order after a "
        "warm-up study; speed-up = per-round (trials/hour at 2) / (trials/hour at 1).",
        checks=checks,
        tables=tables,
        notes=notes,
        settings={"executor": args.executor, "trials": trials, "epochs": epochs, "timed_rounds": repeats,
                  "cpus_per_trial": 1, "sampler": "random", "spec": "studies/quickstart.yaml"},
        machine_info=info,
        tiny=args.tiny,
        wall_s=time.perf_counter() - started,
        timings=timings.to_dict(),
        trials_per_hour={k: bk.Spread.of(v).to_dict() for k, v in per_hour.items()},
        speedup=speedup.to_dict(),
        training_s=training_s,
        harness_s_per_trial_sequential=sequential.to_dict(),
        same_trials=same_trials,
        trial_params=params,
        ray_start_s=ray_start_s,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=4, help="trials per study (the quickstart has 12)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per trial (the quickstart has 20)")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (each runs both studies)")
    parser.add_argument(
        "--executor", choices=("ray", "local"), default="ray",
        help="local runs trials one at a time whatever max_concurrent says (a quick smoke test only)",
    )


def main(argv: list[str] | None = None) -> int:
    return bk.bench_main(run, __doc__.split("\n\n")[0], argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
