"""The search harness as ``svite-search search`` runs it: the search (:mod:`svite_search.search`)
with its MLflow tracker (:mod:`svite_search.tracking`) and its Pareto-front report
(:mod:`svite_search.report`) plugged in.

The search sits on a lower floor than tracking and the report, so it cannot import them; it
takes them as arguments (:mod:`svite_search.search.hooks`) and this module, on the top floor
with the command line, composes them.

Example::

    from svite_search.harness import run_search
    from svite_search.search import load_spec

    summary = run_search(load_spec("studies/quickstart.yaml"), "runs/quickstart")
    summary["pareto"], summary["report_dir"], summary["tracking_uri"]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ._study_dir import report_dir
from .search.hooks import StudyTracker
from .search.runner import run_search as _run_search
from .search.spec import StudySpec
from .search.study import StudyHandle


def make_tracker(handle: StudyHandle) -> StudyTracker:
    """The study's MLflow tracker as its spec's ``tracking`` section asks (a do-nothing one when
    tracking is off or MLflow is not installed)."""
    from .tracking.study import make_study_tracker

    spec = handle.spec
    return make_study_tracker(handle.study_dir, spec.name, spec.raw, tracking_uri=spec.tracking.uri,
                              enabled=spec.tracking.enabled)


def write_study_report(study_dir: Path) -> str:
    """Write the report of ``study_dir`` into its report folder; returns that folder."""
    from .report import write_report

    out = report_dir(study_dir)
    write_report(study_dir, out)
    return str(out)


def run_search(spec: StudySpec, study_dir: str | Path, **options: Any) -> dict[str, Any]:
    """:func:`svite_search.search.run_search` tracked in MLflow, with the report written at the end
    (the same options and result)."""
    options.setdefault("tracker_factory", make_tracker)
    options.setdefault("report_writer", write_study_report)
    return _run_search(spec, study_dir, **options)
