"""``svite-search paper-table``: the paper's sparsity tables beside our MACs and our runs.

Rows: DeiT-Tiny/Small/Base × dense, SViTE at 30-70 % sparsity, S²ViTE (head, MLP) pairs, SViTE+
keep counts. Each row has our analytic MACs saving, the paper's reported top-1 where it gives
one (sources listed), and the mean ± sd top-1 of our finished runs with that setting under
``--runs`` (``train`` run directories and study directories alike), pooled only over runs of
one recipe (a row per recipe otherwise), with the runs behind each cell listed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help=help, description=help,
        epilog="examples: svite-search paper-table --format csv;  svite-search paper-table --model vit_digits "
        "--runs runs/paper-digits",
    )
    p.add_argument("--runs", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                   help="directories to search for finished runs (result.json + config.yaml)")
    p.add_argument("--model", dest="models", action="append", default=None, metavar="NAME",
                   help="rows for this model instead of DeiT-Tiny/Small/Base (repeatable; e.g. vit_digits)")
    p.add_argument("--num-classes", type=int, default=None, metavar="C",
                   help="classes of the head counted (default: the model's; 1000 for DeiT, 10 for the digits presets)")
    p.add_argument("--format", choices=("md", "csv"), default="md", help="Markdown (default) or CSV")
    p.add_argument("--json", action="store_true", help="print one JSON object: {rows, paper, notes}")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, UserInputError
    from ..report.paper import find_runs, format_csv, format_markdown, paper_results, paper_rows
    from . import print_json
    from ._flops import as_option_error

    if args.num_classes is not None and args.num_classes < 1:
        raise UserInputError(f"--num-classes: {args.num_classes} must be >= 1")
    records = find_runs(args.runs) if args.runs else []
    try:
        rows = paper_rows(args.models, runs=args.runs, num_classes=args.num_classes, records=records)
    except ConfigError as err:  # an unknown --model
        raise as_option_error(err) from None
    if args.json:
        data = paper_results()
        print_json({"rows": rows, "paper": data["paper"], "notes": data["notes"]})
    elif args.format == "csv":
        sys.stdout.write(format_csv(rows))
    else:
        sys.stdout.write(format_markdown(rows))
    return 0
