"""Storage: the per-trial cost of the Optuna storage, PostgreSQL against the study's own sqlite.

What a search driver writes for one trial, without training it: ``ask`` (the sampler reads the
study), the trial's parameters drawn from a search space the size of the quickstart's (6
parameters), the driver's user attribute, a heartbeat, the ~25 result attributes a finished
trial carries, and ``tell``. The storages are opened as a search opens them
(:func:`svite_search.search.study.open_storage`: heartbeats on, the same engine settings).

Both arms run in one process, interleaved (sqlite, PostgreSQL in one round, the other order in
the next); per round the figure is the mean seconds per trial over ``--trials`` trials, and the
result is the median over rounds of the per-trial difference and ratio. The study grows as the
rounds go, as a real study does (``ask`` reads every trial so far).

PostgreSQL: ``--url postgresql://...`` names a server; without it a throwaway server is
started for the run (``initdb`` + ``pg_ctl``, as the test suite does, but with fsync on, as a
real server runs) and stopped after. The server runs on this machine (127.0.0.1), so the
figures are a lower bound for a database across a network. Both stores write to the same disk.

Run::

    python -m benchmarks.bench_storage                  # writes reports/benchmarks/storage.json
    python -m benchmarks.bench_storage --rounds 3 --trials 5 --out /tmp/storage.json
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

import optuna

from svite_search.search.study import open_storage

from . import benchkit as bk

RESULT_ATTRS = 25


def one_trial(study: optuna.Study, storage: Any, study_id: int) -> None:
    trial = study.ask()
    trial.suggest_categorical("method", ["svite", "s2vite", "dense"])
    trial.suggest_float("sparsity.density", 0.2, 0.8)
    trial.suggest_categorical("sparsity.head_density", [0.5, 1.0])
    trial.suggest_int("sparsity.update_interval", 1, 3)
    trial.suggest_float("tokens.keep_ratio", 0.5, 1.0)
    trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    trial.set_user_attr("driver", "host:1234")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    for i in range(RESULT_ATTRS):
        trial.set_user_attr(f"metric_{i}", float(i))
    study.tell(trial, [90.0, 0.01])


def arm(url: str, name: str) -> Callable[[int], None]:
    """A function that runs ``trials`` trials' storage work on the study at ``url``."""
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0), load_if_exists=True)
    study_id = storage.get_study_id_from_name(name)  # once: a driver knows its study

    def run(trials: int) -> None:
        for _ in range(trials):
            one_trial(study, storage, study_id)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_storage", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database URL (default: start a throwaway server)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--trials", type=int, default=20, help="trials per arm per round")
    parser.add_argument("--out", type=Path, default=bk.REPORT_DIR / "storage.json")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message="Heartbeat of storage")

    server = None
    url = args.url
    if url is None:
        # the test suite's throwaway server (tests/ is a namespace package from the repository root)
        from tests.scaleout.services import PostgresServer

        server = PostgresServer(durable=True)  # fsync on, as a real server runs
        server.start()
        url = server.create_database("bench")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            arms = {"sqlite": arm(f"sqlite:///{Path(tmp) / 'optuna.db'}", "bench"), "postgresql": arm(url, "bench")}
            for run in arms.values():  # warm up: schema, connections, first queries
                run(2)
            timings = bk.interleave({name: functools.partial(run, args.trials) for name, run in arms.items()},
                                    warmup=0, repeats=args.rounds)
    finally:
        if server is not None:
            server.stop()

    # seconds per trial, per round
    seconds = {name: [t / args.trials for t in values] for name, values in timings.seconds.items()}
    diffs = [p - s for s, p in zip(seconds["sqlite"], seconds["postgresql"])]
    ratios = timings.ratios("postgresql")
    result = {
        "benchmark": "storage",
        "machine": bk.machine("cpu"),
        "note": "shared machine; PostgreSQL on 127.0.0.1; per-trial storage work only (no training)",
        "rounds": args.rounds,
        "trials_per_round": args.trials,
        "per_trial_ms": {name: bk.Spread.of([1000 * v for v in values]).to_dict() for name, values in seconds.items()},
        "postgresql_minus_sqlite_ms": bk.Spread.of([1000 * d for d in diffs]).to_dict(),
        "postgresql_over_sqlite": bk.Spread.of(ratios).to_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per trial: sqlite {statistics.median(seconds['sqlite']) * 1000:.1f} ms, "
          f"postgresql {statistics.median(seconds['postgresql']) * 1000:.1f} ms; "
          f"difference {statistics.median(diffs) * 1000:+.1f} ms, ratio {statistics.median(ratios):.2f} "
          f"(median of {args.rounds} interleaved rounds of {args.trials} trials)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
