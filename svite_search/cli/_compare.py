"""``svite-search compare DIR DIR ...``: several studies' Pareto fronts in one figure and table.

Writes compare.png, compare.html (self-contained), compare.md and fronts.csv into ``--out``;
the hypervolumes share one reference point, so they compare across the studies.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help=help, description=help,
        epilog="example: svite-search compare runs/quickstart runs/paper-digits --out runs/compare",
    )
    p.add_argument("study_dirs", type=Path, nargs="+", metavar="DIR", help="two or more study directories")
    p.add_argument("--out", type=Path, default=Path("runs") / "compare", metavar="OUT",
                   help="where to write (default runs/compare)")
    p.add_argument("--json", action="store_true", help="print one JSON object (per study: front, hypervolume, compute)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..report.compare import compare_studies
    from ..report.status import format_duration
    from . import print_json

    result = compare_studies(args.study_dirs, args.out)
    if args.json:
        print_json(result)
        return 0
    print(f"compare    {result['out_dir']}  ({', '.join(result['files'])})")
    for s in result["studies"]:
        hv = f"{s['hypervolume']:.3f}" if s["hypervolume"] is not None else "—"
        print(f"  {s['study']:<20} front {len(s['front']):<3} hypervolume {hv} (shared reference)  "
              f"{s['complete']} complete, trial time {format_duration(s['trial_time_s'])}")
    return 0
