"""What the search driver needs from the layers above it, and gets injected: a study tracker and
a report writer.

Why injected: the search runs trials and keeps the Optuna study; recording them in MLflow
(:mod:`svite_search.tracking`) and writing the Pareto-front report (:mod:`svite_search.report`)
sit on the floors above, which import the search, not the other way round. The caller composes
them (:mod:`svite_search.harness`, which the command line uses); without them a search runs
untracked and writes no report.

Example::

    run_search(spec, study_dir, tracker_factory=lambda handle: NullTracker(), report_writer=None)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

if TYPE_CHECKING:  # the study package opens Optuna; this module is only its type
    from .study import StudyHandle


class StudyTracker(Protocol):
    """The calls a search makes on its tracker, all from the driver process. A write that fails
    must never fail the study: the tracker logs it and goes on (the Optuna study stays the record)."""

    enabled: bool
    tracking_uri: str | None

    def start(self) -> None:
        """Open the store and the study's run (reused on resume); raises when it cannot."""

    def trial_started(self, number: int, params: Mapping[str, Any], config: Any = None) -> None: ...

    def trial_epoch(self, number: int, metrics: Mapping[str, Any]) -> None: ...

    def trial_finished(self, number: int, state: Any, result: Mapping[str, Any] | None = None,
                       error: str | None = None) -> None: ...

    def close_stale(self, numbers: Iterable[int] | None = None) -> list[int]:
        """Close the runs of trials a killed driver left open; returns their numbers."""

    def reconcile(self, study: Any, study_dir: Path, logged_elsewhere: Callable[[Any], bool]) -> list[int]:
        """Write what the study's finished trials are missing (``logged_elsewhere(trial)``: a live
        driver elsewhere records that trial itself); returns the trial numbers written."""

    def end(self, pareto: list[dict[str, Any]], report_dir: str | Path | None = None) -> None: ...

    def stop(self, status: str, reason: str) -> None:
        """End the study's run before its target (``KILLED`` by a signal, ``FAILED`` by the machine)."""


class NullTracker:
    """The tracker when tracking is off (or none was injected): every call does nothing."""

    enabled = False
    tracking_uri: str | None = None
    parent_run_id: str | None = None

    def start(self) -> None:
        pass

    def trial_started(self, number: int, params: Mapping[str, Any], config: Any = None) -> None:
        pass

    def trial_epoch(self, number: int, metrics: Mapping[str, Any]) -> None:
        pass

    def trial_finished(self, number: int, state: Any, result: Mapping[str, Any] | None = None,
                       error: str | None = None) -> None:
        pass

    def close_stale(self, numbers: Iterable[int] | None = None) -> list[int]:
        return []

    def reconcile(self, study: Any, study_dir: Path, logged_elsewhere: Callable[[Any], bool]) -> list[int]:
        return []

    def end(self, pareto: list[dict[str, Any]], report_dir: str | Path | None = None) -> None:
        pass

    def stop(self, status: str, reason: str) -> None:
        pass


#: The study's tracker, made once the study is open.
TrackerFactory = Callable[["StudyHandle"], StudyTracker]
#: Writes the report of a study directory; returns where it went (None: nothing was written).
ReportWriter = Callable[[Path], "str | None"]
