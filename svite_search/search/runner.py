"""``run_search``: open or resume a study, run its trials on an executor, report the result.

The tracker and the report writer are injected (:mod:`.hooks`); :func:`svite_search.harness.run_search`
is this with MLflow and the report plugged in, as ``svite-search search`` runs it.

Example::

    spec = load_spec("studies/quickstart.yaml")
    summary = run_search(spec, Path("runs/quickstart"))   # untracked, no report
    summary["trials_complete"], summary["pareto"]
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .._redact import mask_url
from .hooks import NullTracker, ReportWriter, StudyTracker, TrackerFactory
from .monitor import SearchMonitor, summary_table
from .spec import StudySpec
from .stop import SearchInterrupted, StudyStopped, as_stopped
from .study import (DRIVER_ATTR, Heartbeat, SpentSpace, StudyHandle, driver_gone, driver_id, pareto_front, prepare_study,
                    study_counts)

log = logging.getLogger(__name__)


def _logged_elsewhere(trial: Any) -> bool:
    """Whether another live driver ran ``trial`` (it records the trial itself)."""
    driver = trial.user_attrs.get(DRIVER_ATTR)
    return driver is not None and driver != driver_id() and not driver_gone(driver)


def reconcile_tracking(tracker: StudyTracker, handle: StudyHandle) -> list[int]:
    """Bring the tracker up to date with the study: the runs of finished trials it is missing
    (the tracking server was away, or the store was deleted) and the runs a killed driver left
    open. Returns the trial numbers written."""
    if not getattr(tracker, "enabled", False):
        return []
    return tracker.reconcile(handle.study, handle.study_dir, _logged_elsewhere)


def write_study_report(report_writer: ReportWriter | None, study_dir: Path) -> str | None:
    """Write the study's report with ``report_writer``; a report failure never fails a search."""
    if report_writer is None:
        return None
    try:
        return report_writer(study_dir)
    except ImportError as err:
        log.warning("no report written (the report module is unavailable: %s)", err)
    except Exception as err:
        log.warning("the report could not be written: %s: %s", type(err).__name__, err)
    return None


def run_search(spec: StudySpec, study_dir: str | Path, *, force: bool = False, live: bool | None = None,
               verbose: bool = False, tracker_factory: TrackerFactory | None = None,
               report_writer: ReportWriter | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``study_dir`` to ``n_trials`` finished trials.

    ``tracker_factory(handle)`` makes the study's tracker once the study is open, and
    ``report_writer(study_dir)`` writes its report at the end (see :mod:`.hooks`; the command
    line's are MLflow and the Pareto-front report, composed by :mod:`svite_search.harness`).
    Without them the study runs untracked and writes no report.

    Returns the ``search --json`` object: ``study``, ``study_dir``, ``trials_complete``,
    ``trials_failed``, ``trials_pruned`` (stopped early), ``trials_repeated`` (repeats skipped
    untrained, ``search.repeats: skip``), ``pareto`` (``{number, params, values}``),
    ``report_dir``, plus ``objectives``, ``n_trials``, ``executor``, ``resumed``,
    ``recovered`` (interrupted trials failed and queued again) and ``wall_s``; ``stopped`` says
    why when the study stopped short of ``n_trials`` (``search.max_failures``), and ``spent``
    why the run ended before it because the sampler asked only for settings trained already
    (``search.max_repeats_in_a_row``: an end, not a failure).

    Raises :class:`.stop.SearchInterrupted` (a signal) or :class:`.stop.InfrastructureStop` (a
    full disk, a read-only path) after failing and requeueing the trials they stopped and ending
    the MLflow study run KILLED or FAILED; the exception's ``summary`` is the summary so far.
    """
    import optuna

    start = time.perf_counter()
    study_dir = Path(study_dir)
    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.WARNING)
    parallel = spec.executor.kind == "ray" and spec.executor.max_concurrent != 1
    handle = prepare_study(spec, study_dir, force=force, parallel=parallel)
    from .ray_session import clean_leftovers

    clean_leftovers(study_dir)  # the local Ray of a killed driver of this study, whichever executor runs now
    tracker = tracker_factory(handle) if tracker_factory is not None else NullTracker()
    tracker.start()
    if handle.recovered:
        tracker.close_stale(handle.recovered)
    reconcile_tracking(tracker, handle)
    monitor = SearchMonitor(spec, handle.study, tracker, live=live, storage=handle.storage)
    before = study_counts(handle.study)
    short: str | None = None
    try:
        with Heartbeat(handle.storage, monitor.running_trial_ids):
            if spec.executor.kind == "ray":
                from .ray_executor import run_ray

                short = run_ray(handle, monitor, verbose=verbose)
            else:
                from .local import run_local

                short = run_local(handle, monitor)
    except (StudyStopped, KeyboardInterrupt) as caught:
        stop = as_stopped(caught)
        if not isinstance(stop, StudyStopped):
            raise
        # No report: a stop must be quick, and the next run writes it whole.
        tracker.stop("KILLED" if isinstance(stop, SearchInterrupted) else "FAILED", str(stop))
        try:
            stop.summary = _summary(spec, handle, tracker, before, [], None, start)  # type: ignore[attr-defined]
        except Exception:  # the storage itself may be what failed
            stop.summary = None  # type: ignore[attr-defined]
        if stop is caught:
            raise
        raise stop from None
    finally:
        monitor.close()
    pareto = pareto_front(handle.study)
    report_dir = write_study_report(report_writer, study_dir)
    reconcile_tracking(tracker, handle)  # trials that finished while the tracking server was away
    tracker.end(pareto, report_dir)
    summary = _summary(spec, handle, tracker, before, pareto, report_dir, start)
    if isinstance(short, SpentSpace):
        summary["spent"] = str(short)  # an end, not a failure: the sampler asks only for trained settings
    elif short and summary["trials_complete"] + summary["trials_pruned"] < spec.n_trials:
        summary["stopped"] = short
    return summary


def _summary(spec: StudySpec, handle: StudyHandle, tracker: Any, before: Any, pareto: list[dict[str, Any]],
             report_dir: str | None, start: float) -> dict[str, Any]:
    study_dir = handle.study_dir
    counts = study_counts(handle.study)
    return {
        "study": spec.name,
        "study_dir": str(study_dir),
        "objectives": [o.to_dict() for o in spec.objectives],
        "n_trials": spec.n_trials,
        "executor": spec.executor.kind,
        "trials_complete": counts.complete,
        "trials_failed": counts.failed,
        "trials_pruned": counts.pruned - counts.repeats,
        "trials_repeated": counts.repeats,  # skipped untrained (search.repeats: skip), not in trials_pruned
        # the recovered trials were failed before ``before`` was counted: they are not in it twice
        "trials_run_now": counts.complete + counts.failed + counts.pruned
        - (before.complete + before.failed + before.pruned),
        "resumed": handle.resumed,
        "recovered": handle.recovered,
        "pareto": pareto,
        "report_dir": report_dir,
        "storage": "sqlite (study dir)" if handle.url.startswith(f"sqlite:///{study_dir.resolve()}") else "database",
        "tracking_uri": mask_url(tracker.tracking_uri) if getattr(tracker, "tracking_uri", None) else None,
        "wall_s": time.perf_counter() - start,
    }


def format_summary(summary: dict[str, Any], spec: StudySpec, study_dir: Path) -> str:
    """The human summary: a table of every trial (``*`` marks the Pareto front) and where things are."""
    from .study import load_study

    study = load_study(study_dir)
    table = summary_table(study, spec, {p["number"] for p in summary["pareto"]})
    lines = [
        table,
        "",
        f"study      {summary['study']}: {summary['trials_complete']} complete, {summary['trials_failed']} failed, "
        f"{summary['trials_pruned']} pruned"
        + (f", {summary['trials_repeated']} repeats skipped" if summary.get("trials_repeated") else "")
        + f" ({summary['executor']} executor, {summary['wall_s']:.0f} s)",
        f"pareto     {len(summary['pareto'])} trial(s): "
        + ", ".join(f"#{p['number']}" for p in summary["pareto"]),
        f"study dir  {summary['study_dir']}",
    ]
    if summary.get("spent"):
        lines.append(f"ended      {summary['spent']}")
    if summary.get("report_dir"):
        lines.append(f"report     {summary['report_dir']}")
    if summary.get("tracking_uri"):
        lines.append(f"mlflow     {summary['tracking_uri']}")
    return "\n".join(lines)
