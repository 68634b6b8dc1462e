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


def check_report_dir(study_dir: Path, out: Path | None) -> Path:
    """Where the report goes, refused (exit code 2, nothing written) when it is a file, cannot be
    created or written, or lies inside a study anywhere but that study's ``report`` folder: a
    report never writes over a study's own files."""
    from .._study_dir import check_output_path, enclosing_study, report_dir
    from ..errors import UserInputError

    if not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: no such directory")
    target = out if out is not None else report_dir(study_dir)
    check_output_path("--out", target, directory=True)
    home = enclosing_study(target)
    if home is not None:
        report = report_dir(home).resolve()
        resolved = target.resolve()
        if resolved != report and report not in resolved.parents:
            raise UserInputError(f"--out {target}: inside the study {home}; a report goes in its report folder "
                                 "or outside any study")
    return target


def run(args: argparse.Namespace) -> int:
    from ..report import write_report
    from . import print_json

    out = check_report_dir(args.study_dir, args.out)
    info = write_report(args.study_dir, out)
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
