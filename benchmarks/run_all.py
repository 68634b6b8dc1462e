"""Run the benchmark suite and write one report: ``results.json`` and ``README.md``.

Each benchmark runs in its own Python process (its own threads, memory and Ray instance, so one
cannot slow or break the next) and hands back a JSON record (see ``benchkit.record``). This
script collects the records into ``results.json`` and renders ``README.md``: the machine, a
summary of every goal with whether it is met, and per benchmark its figures, tables and notes.
A benchmark that crashes is reported as such and the others still run.

Usage::

    python -m benchmarks.run_all                      # all, writes reports/benchmarks/ (make bench)
    python -m benchmarks.run_all --only slim          # one benchmark; the others' results are kept
    python -m benchmarks.run_all --tiny --out-dir runs/bench-tiny   # smoke size, seconds per benchmark
    python -m benchmarks.run_all --device cuda        # on a GPU: reports/benchmarks/gpu-<name>/
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .reporting import STATUS, load, machine_lines, markdown_table, tables_and_notes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPORT_DIR = REPO / "reports" / "benchmarks"

#: name -> (script, runs on the --device given, uses the search executor)
BENCHMARKS: dict[str, tuple[str, bool, bool]] = {
    "engine_overhead": ("bench_engine_overhead.py", True, False),
    "topology_update": ("bench_topology_update.py", True, False),
    "slim": ("bench_slim.py", True, False),
    "tokens": ("bench_tokens.py", True, False),
    "harness": ("bench_harness.py", False, True),
    "concurrency": ("bench_concurrency.py", False, True),
    "startup": ("bench_startup.py", False, False),
    "driver": ("bench_driver.py", False, False),
    "peers": ("bench_peers.py", True, False),
}
#: benchmarks run on their own, not by this suite: each needs a service it cannot start for itself
#: (bench_storage.py: a PostgreSQL server, see its --help), or runs long and writes its own report
#: (bench_search.py: `make bench-search`, reports/benchmarks/search/)
STANDALONE = ("bench_storage.py", "bench_search.py")
#: the environment `make` gives every command (quiet telemetry, no display)
ENV_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "MPLBACKEND": "Agg",
                "PYTHONUNBUFFERED": "1"}
BUDGET_S = 15 * 60


def default_out_dir(device: str, tiny: bool) -> Path:
    if tiny:
        return Path(tempfile.gettempdir()) / "svite-bench-tiny"
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else "cuda"
        return REPORT_DIR / ("gpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    return REPORT_DIR


def run_benchmark(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One benchmark in its own process; its record, or an error record if it failed."""
    script, on_device, uses_executor = BENCHMARKS[name]
    out = work / f"{name}.json"
    command = [sys.executable, "-m", f"benchmarks.{Path(script).stem}", "--out", str(out)]
    if args.tiny:
        command.append("--tiny")
    if on_device:
        command += ["--device", args.device]
    if uses_executor and args.executor:
        command += ["--executor", args.executor]
    # the package from the repository root, wherever this suite was started from
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**ENV_DEFAULTS, **os.environ, "PYTHONPATH": path}
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, cwd=REPO, timeout=args.timeout, stdout=sys.stderr)
        error = None if proc.returncode == 0 else f"exited with status {proc.returncode}"
    except subprocess.TimeoutExpired:
        error = f"killed after {args.timeout} s"
    wall = time.perf_counter() - started
    if error is None and out.is_file():
        record = json.loads(out.read_text())
        record["process_wall_s"] = wall
        return record
    return {"benchmark": name, "title": name, "error": error or "wrote no record", "process_wall_s": wall,
            "checks": [], "tables": [], "notes": []}


def _rerun_since(records: list[dict[str, Any]], full: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The benchmarks measured after the last full run ended, oldest first, with their dates:
    a report kept across ``--only`` runs says which figures are newer than the rest."""
    if not full or not full.get("date"):
        return []
    try:
        ended = _dt.datetime.fromisoformat(full["date"]) + _dt.timedelta(seconds=float(full.get("wall_s") or 0))
        dated = [(r["benchmark"], _dt.datetime.fromisoformat(r["machine"]["date"])) for r in records
                 if (r.get("machine") or {}).get("date")]
    except (TypeError, ValueError):  # a hand-written or older results file: no dates to go by
        return []
    later = sorted((when, name) for name, when in dated if when > ended)
    return [(name, when.isoformat(timespec="minutes")) for when, name in later]


def _cpu_models(records: list[dict[str, Any]]) -> set[str]:
    """The CPUs the records were measured on (a report kept across reruns can mix machines)."""
    return {r["machine"]["cpu_model"] for r in records if (r.get("machine") or {}).get("cpu_model")}


# ----------------------------------------------------------------------------- the report


def render(results: dict[str, Any], guide: str = "../../benchmarks/README.md") -> str:
    """The Markdown report of a suite's ``results.json`` content; ``guide`` links the reading guide."""
    suite = results["suite"]
    records = [results["benchmarks"][n] for n in BENCHMARKS if n in results["benchmarks"]]
    full = suite.get("full_run")
    if full:
        origin = (f"Generated by `make bench` (`{full['command']}`): the whole suite started on {full['date']} "
                  f"and took {full['wall_s'] / 60:.1f} min")
    else:
        origin = "Generated by `python -m benchmarks.run_all`; the whole suite has not run into this directory yet"
    rerun = _rerun_since(records, full)
    if rerun:
        origin += "; re-run alone since: " + ", ".join(f"{name} ({date})" for name, date in rerun)
    elif set(suite["ran"]) != set(BENCHMARKS):
        origin += f"; re-run alone since: {', '.join(suite['ran'])} (started {suite['date']})"
    if suite.get("tiny") or (full or {}).get("tiny"):
        origin += " — **tiny smoke sizes, not results**"
    lines = [
        f"# Benchmark results ({suite['machine'].get('device', 'cpu')})",
        "",
        origin + ".",
        f"How to read the figures: [benchmarks/README.md]({guide}). In short: every "
        "comparison ran in one process, A and B interleaved in rotating order after warm-up; a ratio "
        "is the median over rounds of t_B / t_A with its interquartile range (IQR). Absolute times "
        "hold for this machine only.",
        "",
        "## Machine",
        "",
        *machine_lines(suite["machine"]),
        *(["- the figures below were measured on more than one machine ("
           + ", ".join(sorted(_cpu_models(records))) + "): each section's *Measured:* line names its own"]
          if len(_cpu_models(records)) > 1 else []),
        "",
        "## Goals",
        "",
    ]
    summary_rows = []
    for record in records:
        if record.get("error"):
            summary_rows.append([record["benchmark"], record["title"], "—", "—", f"**failed: {record['error']}**"])
        for c in record["checks"]:
            summary_rows.append([record["benchmark"], c["figure"], c["shown"], c["goal"] or "—", STATUS[c["met"]]])
    lines += [markdown_table(["benchmark", "figure", "measured", "goal", "status"], summary_rows), ""]
    for record in records:
        lines += ["", f"## {record['title']}", ""]
        if record.get("error"):
            lines += [f"**This benchmark failed: {record['error']}.** Run it alone to see why "
                      f"(`python -m benchmarks.run_all --only {record['benchmark']}`).", ""]
            continue
        machine = record.get("machine", {})
        lines += [
            record["what"],
            "",
            f"*How:* {record['how']}",
            "",
            f"*Measured:* {machine.get('date')} on {machine.get('device')} ({machine.get('cpu_model')}), "
            f"{record['settings'].get('threads', machine.get('torch_threads'))} intra-op thread(s), 1-minute load "
            f"average {load(machine.get('load_average_1min'))} → {load(machine.get('load_average_1min_after'))}; "
            f"{record['wall_s']:.0f} s measuring, {record.get('process_wall_s', record['wall_s']):.0f} s in all.",
            "",
        ]
        if record["checks"]:
            lines += [markdown_table(
                ["figure", "measured", "goal", "status"],
                [[c["figure"], c["shown"], c["goal"] or "—", STATUS[c["met"]]] for c in record["checks"]],
            ), ""]
        lines += tables_and_notes(record)
        missed = [c for c in record["checks"] if c["met"] is False]
        if missed:
            lines += ["", "**Goal missed.** Why, and what would close it: " + " ".join(sorted({c["why_missed"] for c in missed if c["why_missed"]}))]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    guide = Path(os.path.relpath(HERE / "README.md", out_dir.resolve())).as_posix()
    (out_dir / "README.md").write_text(render(results, guide))


def suite_machine(device: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The machine as the first benchmark saw it (they all ran here), with the timing threads."""
    measured = [r for r in records if r.get("machine")]
    machine = dict(measured[0]["machine"]) if measured else {"device": device}
    threads = sorted({str(r["settings"].get("threads")) for r in measured if r.get("settings", {}).get("threads")})
    machine["timing_threads"] = ", ".join(threads) if threads else "see each benchmark"
    return machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke test, not results")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: reports/benchmarks (CPU), reports/benchmarks/gpu-<name> (CUDA); "
                        "--tiny: a temporary directory")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (the model benchmarks)")
    parser.add_argument("--executor", choices=("ray", "local"), default=None,
                        help="executor of the harness and concurrency studies (default: ray)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds before a benchmark is stopped")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or default_out_dir(args.device, args.tiny)
    names = args.only or list(BENCHMARKS)
    results_file = out_dir / "results.json"
    previous: dict[str, Any] = {}
    full_run: dict[str, Any] | None = None
    if args.only and results_file.is_file():  # keep the other benchmarks' last results
        before = json.loads(results_file.read_text())
        previous = before.get("benchmarks", {})
        full_run = before.get("suite", {}).get("full_run")
    started = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    records: dict[str, Any] = dict(previous)
    with tempfile.TemporaryDirectory(prefix="svite-bench-") as work:
        for name in names:
            records[name] = run_benchmark(name, args, Path(work))
    wall = time.perf_counter() - started
    command = "python -m benchmarks.run_all" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if set(names) == set(BENCHMARKS):
        full_run = {"command": command, "date": date, "wall_s": wall, "tiny": args.tiny}
    results = {
        "suite": {
            "command": command,
            "date": date,
            "tiny": args.tiny,
            "ran": names,
            "wall_s": wall,
            "budget_s": BUDGET_S,
            "full_run": full_run,
            "machine": suite_machine(args.device, [records[n] for n in names]),
        },
        "benchmarks": {n: records[n] for n in BENCHMARKS if n in records},
    }
    write_report(results, out_dir)
    failed = [n for n in names if records[n].get("error")]
    missed = [c["figure"] for n in names for c in records[n]["checks"] if c["met"] is False]
    print(f"suite: {len(names)} benchmark(s) in {wall / 60:.1f} min (budget {BUDGET_S // 60} min); "
          f"{len(missed)} goal(s) missed; {len(failed)} failed; report: {out_dir / 'README.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
