"""``svite-search demo``: run the quickstart study and say where its report and MLflow store are."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

QUICKSTART = Path("studies") / "quickstart.yaml"


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(
        name,
        help=help_text,
        description="Run studies/quickstart.yaml (SViTE / S²ViTE / SViTE+ on the embedded digits, CPU) "
        "with the Ray executor when Ray is installed, else locally; rerunning resumes it.",
    )
    p.add_argument("--spec", type=Path, default=None, help="another study spec (default studies/quickstart.yaml)")
    p.add_argument("--executor", choices=("local", "ray"), default=None, help="default: ray when installed")
    p.add_argument("--trials", type=int, default=None, metavar="N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a spec value (repeatable), e.g. train.epochs=2")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="study directory (default runs/<study name>)")
    p.add_argument("--force", action="store_true", help="continue a study directory created from a different spec")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def quickstart_path() -> Path:
    """``studies/quickstart.yaml`` from the working directory, else from the source checkout."""
    if QUICKSTART.is_file():
        return QUICKSTART
    return Path(__file__).resolve().parents[2] / QUICKSTART


def run(args: argparse.Namespace) -> int:
    import sys

    from ..search import load_spec
    from ._search import execute

    executor = args.executor or ("ray" if importlib.util.find_spec("ray") is not None else "local")
    spec = load_spec(args.spec or quickstart_path(), args.overrides).with_settings(n_trials=args.trials, executor=executor)
    code, summary = execute(spec, args.out, force=args.force, as_json=args.json, progress=not args.no_progress,
                            verbose=getattr(args, "verbose", False))
    if not args.json:
        study_dir = Path(summary["study_dir"]).resolve()
        uri = summary.get("tracking_uri")
        lines = ["", f"demo finished in {summary['wall_s']:.0f} s ({executor} executor)."]
        if summary.get("report_dir"):
            lines.append(f"report:       {Path(summary['report_dir']).resolve()}")
        lines.append(f"Optuna study: {study_dir / 'optuna.db'}")
        if uri:
            lines.append(f"MLflow store: {uri}")
            lines.append(f"open it with: mlflow ui --backend-store-uri {uri}")
            lines.append("              (the web UI needs the full package: .venv/bin/pip install mlflow)")
        print("\n".join(lines), file=sys.stdout)
    return code
