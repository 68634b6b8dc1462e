"""How fast the quick commands start, against ``optuna --help``.

Each command runs as a fresh process (what a user's shell does), one warm-up round, then
interleaved rounds in rotating order; per round each time over ``optuna --help``'s:

* ``svite-search --help``;
* ``svite-search report`` start-up: the command with a directory that is not a study, so it
  imports everything the report command loads before its work (the CLI, the report package,
  pandas) and stops at the input check with exit 2; the report's own work (reading the study,
  the plots) is measured on real studies by the driver benchmark;
* for reference, a process that only imports torch and torchvision: what every command paid
  before the package stopped importing them up front;
* what a trial process on the digits pays for its data: a fresh process that builds the digits
  loaders with an empty per-user cache (scikit-learn imported, the split computed) and with a
  warm one (both read from the cache), reported as the seconds the warm cache saves.

Goal: both start-ups at most 1.5x ``optuna --help``.

Run alone::

    python -m benchmarks.bench_startup --out startup.json
    python -m benchmarks.bench_startup --tiny
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import benchkit as bk

GOAL = 1.5


#: what a trial process does for its data before training (the ``digits`` default)
DIGITS_PROBE = ("from svite_search.config import DataConfig; from svite_search.data import build_data; "
                "build_data(DataConfig(), img_size=8, in_chans=1, num_classes=10)")
COLD, WARM = "digits loaders, empty cache (fresh process)", "digits loaders, warm cache (fresh process)"


def run_cli(args: list[str], expect: int = 0, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}, not {expect}: {proc.stderr[-300:]}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = bk.machine("cpu")
    started = time.perf_counter()
    bindir = Path(sys.executable).parent
    svite, optuna_cli = str(bindir / "svite-search"), str(bindir / "optuna")
    with bk.environment(bk.STUDY_ENV), tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        missing = str(Path(tmp) / "not-a-study")
        contenders = {
            "optuna --help": lambda: run_cli([optuna_cli, "--help"]),
            "svite-search --help": lambda: run_cli([svite, "--help"]),
            "svite-search report (start-up)": lambda: run_cli([svite, "report", missing], expect=2),
        }
        if not args.tiny:
            contenders["reference: python -c 'import torch, torchvision'"] = lambda: run_cli(
                [sys.executable, "-c", "import svite_search._torchvision_guard as g; g.ensure_torchvision()"])
            warm = str(Path(tmp) / "cache-warm")  # filled by the warm-up round
            contenders[COLD] = lambda: run_cli([sys.executable, "-c", DIGITS_PROBE],
                                               env={"SVITE_CACHE_DIR": tempfile.mkdtemp(dir=tmp)})
            contenders[WARM] = lambda: run_cli([sys.executable, "-c", DIGITS_PROBE], env={"SVITE_CACHE_DIR": warm})
        rounds = 1 if args.tiny else args.rounds
        timings = bk.interleave(contenders, warmup=0 if args.tiny else 1, repeats=rounds, device=bk.torch.device("cpu"))
    checks = []
    for name in ("svite-search --help", "svite-search report (start-up)"):
        ratio = timings.ratio(name)
        checks.append(bk.check(f"`{name}` over `optuna --help` (fresh processes)", ratio.median, spread=ratio,
                               goal=f"≤ {GOAL}×", met=ratio.median <= GOAL,
                               shown=bk.with_iqr(ratio, lambda v: f"{v:.2f}×"),
                               why_missed="Each round is one fresh process per command, so the ratio carries "
                               "the machine's load at that moment; a miss with few rounds on a busy machine "
                               "is that spread unless the quartiles also sit above the goal."))
    if WARM in timings.seconds:
        saved = bk.Spread.of([c - w for c, w in zip(timings.seconds[COLD], timings.seconds[WARM])])
        checks.append(bk.check("a fresh process's digits loaders: time saved by a warm per-user cache (scikit-learn "
                               "not imported, the split read)", saved.median, spread=saved, goal=None, met=None,
                               shown=bk.with_iqr(saved, lambda v: f"{v:.2f}") + " s"))
    rows = [[name, bk.with_iqr(timings.spread(name), lambda v: f"{v:.2f}") + " s",
             "—" if name == "optuna --help" else bk.with_iqr(timings.ratio(name), lambda v: f"{v:.2f}×")]
            for name in timings.seconds]
    return bk.record(
        "startup",
        title="Start-up of the quick commands against optuna --help",
        what="How long `svite-search --help` and the report command take to start, as a user runs them.",
        how="Fresh processes, one warm-up round, then interleaved rounds in rotating order; per-round ratio "
        "to `optuna --help`, median and IQR.",
        checks=checks,
        tables=[bk.table("Fresh processes, interleaved rounds", ["command", "wall time", "over `optuna --help`"], rows)],
        notes=["The machine was shared with other jobs while this ran: the ratios are what carries over, "
               "not the absolute times."],
        settings={"rounds": rounds},
        machine_info=info,
        tiny=args.tiny,
        wall_s=time.perf_counter() - started,
        timings=timings.to_dict(),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds")


def main(argv: list[str] | None = None) -> int:
    return bk.bench_main(run, __doc__.split("\n\n")[0], argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
