"""``svite-search report DIR``: the Pareto-front report of a study directory.

Reads the study's Optuna storage (``DIR/optuna.db`` or the storage the search recorded) and
writes trials.csv, pareto.csv, pareto.png, pareto.html, hypervolume.csv/png, importances.csv and
summary.md into ``DIR/report`` (or ``--out``). ``svite-search search`` writes the same report
when it finishes; run this to refresh it while a study is still running.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help=help, description=help,
        epilog="example: svite-search report runs/quickstart   (then open runs/quickstart/report/summary.md)",
    )
    p.add_argument("study_dir", type=Path, metavar="DIR", help="a study directory written by `svite-search search`")
    p.add_argument("--out", type=Path, default=None, metavar="REPORT_DIR", help="where to write (default DIR/report)")
    p.add_argument("--json", action="store_true", help="print one JSON object (files, Pareto front, counts)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report import write_report
    from . import print_json

    info = write_report(args.study_dir, args.out)
    if args.json:
        print_json(info)
        return 0
    print(f"report     {info['report_dir']}  ({', '.join(info['files'])})")
    print(f"trials     {info['trials']} ({info['complete']} complete, {info['failed']} failed)")
    if info["hypervolume"] is not None:
        print(f"front      {len(info['pareto'])} non-dominated trials, hypervolume {info['hypervolume']:.3f}")
    for item in info["pareto"]:
        values = ", ".join(f"{k}={v:.4g}" for k, v in item["values"].items())
        print(f"  #{item['number']:<4} {item['variant']:<8} {values}")
    return 0
