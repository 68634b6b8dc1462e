"""``svite-search search STUDY.yaml``: run a study, or resume it when its directory holds it."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(
        name,
        help=help_text,
        description="Search a study spec with Optuna (multi-objective by default: top1 up, GMACs down). "
        "Trials run in this process (--executor local) or on Ray Tune (--executor ray). Rerunning the same "
        "command continues the study in --out to n_trials finished trials; interrupted trials are rerun.",
        epilog="example: svite-search search studies/quickstart.yaml --executor local --trials 4",
    )
    p.add_argument("spec", help="study spec (YAML); see studies/quickstart.yaml")
    p.add_argument("--executor", choices=("local", "ray"), default=None, help="default: the spec's executor.kind")
    p.add_argument("--trials", type=int, default=None, metavar="N", help="finished trials to reach (search.n_trials)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="study directory (default runs/<study name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a spec value (repeatable), e.g. train.epochs=2")
    p.add_argument("--force", action="store_true", help="continue a study directory created from a different spec")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.set_defaults(run=run)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (ours, Ray's, worker logs) to stderr, so ``--json``
    leaves exactly one JSON object on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def execute(spec: Any, out: Path | None, *, force: bool, as_json: bool, progress: bool, verbose: bool) -> tuple[int, dict]:
    """Run the study and print its summary; returns the exit code and the summary.

    Exit codes: 0 the study reached ``n_trials``; 1 it stopped short (every trial failed,
    ``search.max_failures``, an infrastructure error such as a full disk); 130 / 143 SIGINT /
    SIGTERM stopped it. Each stop ends with one line saying why; rerunning the same command
    resumes the study."""
    from .._study_dir import TRIALS_DIR
    from ..harness import run_search
    from ..search import format_summary
    from ..search.stop import SearchInterrupted, StudyStopped, as_stopped, stop_signals

    study_dir = out or Path("runs") / spec.name
    if not verbose:  # the progress line and the table replace per-epoch training logs
        logging.getLogger("svite_search.train").setLevel(logging.WARNING)
    guard = stdout_to_stderr() if as_json else contextlib.nullcontext()
    try:
        with stop_signals(), guard:
            summary = run_search(spec, study_dir, force=force, live=None if progress else False, verbose=verbose)
    except (StudyStopped, KeyboardInterrupt) as caught:
        stop = as_stopped(caught)
        if not isinstance(stop, StudyStopped):
            raise
        if isinstance(stop, SearchInterrupted):
            line = f"{stop}: running trials failed as interrupted and queued again; the same command resumes the study"
        else:
            line = f"stopped: {stop}; the trial is queued again: free the space or fix the path, then the same command resumes the study"
        summary = dict(getattr(stop, "summary", None) or {"study": spec.name, "study_dir": str(study_dir)})
        summary["error"] = line
        if as_json:
            from . import print_json

            print_json(summary)
        print(f"svite-search search: {line}", file=sys.stderr)
        return stop.exit_code, summary
    code = 0
    if summary["trials_complete"] + summary["trials_pruned"] == 0 and summary["trials_failed"] > 0:
        summary["error"] = f"every trial failed ({summary['trials_failed']}); see the table or {TRIALS_DIR}/<n>/"
        code = 1
    elif summary.get("stopped"):
        done = summary["trials_complete"] + summary["trials_pruned"]
        summary["error"] = (f"stopped at {done} of {summary['n_trials']} finished trials: {summary['stopped']}; "
                            "see the table, then rerun the same command to go on")
        code = 1
    if as_json:
        from . import print_json

        print_json(summary)
    else:
        print(format_summary(summary, spec, study_dir))
    if code:
        print(f"svite-search search: {summary['error']}", file=sys.stderr)
    return code, summary


def _import_in_background(*names: str) -> Any:
    """Start importing modules the command needs later (MLflow: ~2 s) on a thread, so the
    import overlaps importing torch and opening the Optuna storage instead of coming after
    them. A module that is not installed is skipped; the import itself happens (or fails) where
    it is used. Returns the thread: the command joins it before it returns, so no caller (a
    test calling ``main`` in-process, say) is left with a module half imported by a thread
    that outlived the command."""
    import importlib
    import importlib.util
    import threading

    def load() -> None:
        for name in names:
            try:
                if importlib.util.find_spec(name) is not None:
                    importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the module is really used
                pass

    thread = threading.Thread(target=load, name="svite-preload", daemon=True)
    thread.start()
    return thread


def run(args: argparse.Namespace) -> int:
    from ..search import load_spec

    if args.trials is not None and args.trials < 1:
        from ..errors import ConfigError

        raise ConfigError("search.n_trials", f"--trials {args.trials} must be >= 1")
    spec = load_spec(args.spec, args.overrides).with_settings(n_trials=args.trials, executor=args.executor)
    preload = _import_in_background("mlflow")  # a refused spec exits before: no import to wait for
    try:
        code, _ = execute(spec, args.out, force=args.force, as_json=args.json, progress=not args.no_progress,
                          verbose=getattr(args, "verbose", False))
    finally:
        preload.join()
    return code
