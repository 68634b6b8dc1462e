"""The ``svite-search`` command line.

Each sub-command lives in its own module ``svite_search.cli._<name>`` exposing
``add_parser(subparsers)`` (registers the sub-command and its options) and ``run(args) -> int``.
A module's ``add_parser(subparsers, name, help)`` must ``set_defaults(run=run)`` on its parser and
import heavy dependencies inside ``run`` so that ``svite-search --help`` stays fast.

Exit codes (contract): 0 success, 2 bad input (one clear line naming the field or path),
1 a runtime failure. ``--json`` prints exactly one JSON object on stdout; logs go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any, Sequence

from ..errors import UserInputError

#: sub-command name -> module (under svite_search.cli) and one-line help
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("_train", "train one model from a config file"),
    "search": ("_search", "run or resume a study (Optuna + local or Ray executor)"),
    "report": ("_report", "write the Pareto-front report of a study directory"),
    "flops": ("_flops", "analytic MACs of a dense or sparse ViT, and the saving"),
    "masks": ("_masks", "per-layer densities of a sparse weight distribution"),
    "export-slim": ("_export_slim", "physically slim an S²ViTE checkpoint into a smaller ViT"),
    "paper-table": ("_paper_table", "the paper's sparsity tables beside our FLOPs and runs"),
    "demo": ("_demo", "run the quickstart study and say where its report is"),
    "compare": ("_compare", "overlay the Pareto fronts of several studies, with a shared hypervolume"),
    "status": ("_status", "where a study stands: trial states, running trials' epochs, ETA, the front"),
    "list": ("_list", "the study directories under a folder, with their state"),
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line on bad usage (its default is noisy)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def print_json(obj: Any) -> None:
    """Print exactly one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, indent=None, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("svite-search")
    except PackageNotFoundError:  # a source tree that was not installed
        from .. import __version__

        return __version__


#: Library loggers whose routine messages a first run does not need (``-v`` shows them): MLflow
#: creating its tables, Ray announcing the token authentication of the local instance it starts
#: (the token is kept in ~/.ray/auth_token) and that it started, Tune's timing hints and
#: where it wrote its experiment state.
QUIET_LOGGERS: dict[str, int] = {
    "mlflow.store.db.utils": logging.WARNING,
    "alembic": logging.WARNING,
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "ray._private.worker": logging.WARNING,
    "ray.tune.utils.util": logging.ERROR,
    "ray.tune.tune": logging.WARNING,
}


def _quiet_libraries() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="svite-search",
        description="Find, measure and reproduce sparse vision transformers "
        "(SViTE, S²ViTE, SViTE+) with Optuna, Ray Tune and MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{module_name}":
                raise
            continue  # command not available in this build
        module.add_parser(sub, name, help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        _quiet_libraries()
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except UserInputError as err:
        print(f"svite-search {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"svite-search {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a runtime failure: one line, the traceback only with -v
        if args.verbose:
            logging.getLogger(__name__).exception("failed")
        print(f"svite-search {args.command}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE
