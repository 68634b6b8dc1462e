"""``svite-search list [ROOT]``: the study directories under a folder, with their state."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help, epilog="example: svite-search list runs")
    p.add_argument("root", type=Path, nargs="?", default=Path("runs"), metavar="ROOT",
                   help="folder to search for study directories (default runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object: {studies: [...]}")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import UserInputError
    from ..report.status import list_studies
    from ..report.summary import markdown_table
    from . import print_json

    if not args.root.is_dir():
        raise UserInputError(f"{args.root}: no such directory")
    studies = list_studies(args.root)
    if args.json:
        print_json({"root": str(args.root), "studies": studies})
        return 0
    if not studies:
        print(f"no study directories under {args.root}")
        return 0
    rows = []
    for s in studies:
        c = s.get("counts") or {}
        target = f"/{s['n_trials']}" if s.get("n_trials") else ""
        rows.append([s.get("study") or "?", s["state"], f"{c.get('finished', 0)}{target}" if c else "—",
                     c.get("running", "—"), c.get("fail", "—"), s.get("front_size", "—"), s["study_dir"]])
    print(markdown_table(["study", "state", "finished", "running", "failed", "front", "directory"], rows), end="")
    return 0
