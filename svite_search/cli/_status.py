"""``svite-search status DIR``: where a study stands, read from its Optuna storage.

Trials by state, each running trial's epoch and current top-1, an ETA and the current Pareto
front. It only reads, so it is safe beside the process that runs the study, on this machine or
another one sharing the database. ``--watch`` redraws in place until the study stops.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help=help, description=help,
        epilog="examples: svite-search status runs/quickstart;  svite-search status runs/quickstart --watch",
    )
    p.add_argument("study_dir", type=Path, metavar="DIR", help="a study directory written by `svite-search search`")
    p.add_argument("--json", action="store_true", help="print one JSON object (with --watch: one per refresh)")
    p.add_argument("--watch", action="store_true", help="refresh until the study is no longer running (Ctrl-C stops)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between refreshes (default 5)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import UserInputError
    from ..report.status import format_status, study_status
    from . import print_json

    if args.interval <= 0:
        raise UserInputError(f"--interval: {args.interval} must be > 0")
    live = sys.stdout.isatty() and not args.json
    stop = threading.Event()
    while True:
        info = study_status(args.study_dir)
        if args.json:
            print_json(info)
        else:
            text = format_status(info)
            if live and args.watch:
                sys.stdout.write("\x1b[H\x1b[2J")  # redraw in place
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        if not args.watch or info["state"] != "running":
            return 0
        if not live and not args.json:
            sys.stdout.write("\n")
        stop.wait(args.interval)
