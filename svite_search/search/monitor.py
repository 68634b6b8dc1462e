"""What the driver does when a trial starts, finishes an epoch or ends: track it in MLflow, keep
its heartbeat, and show a live one-line progress display; plus the summary table at the end.

Both executors feed one :class:`SearchMonitor` from the driver process (the only process that
writes to the study and the tracking store).

The display is one line on stderr: ``quickstart  5/10 done  2 running  1 failed  pareto 3``,
redrawn in place on a terminal and printed once per finished trial otherwise.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO, Any, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from .objective import COMPLETE, FAIL, PRUNED, TrialOutcome
from .space import trial_config_dict
from .spec import StudySpec
from ..metrics.pareto import IncrementalFront
from .study import Counts, heartbeats_on, is_feasible, record_beat, study_counts

log = logging.getLogger(__name__)

#: seconds between the status line's recounts of the study's trials in the storage (between
#: them, the monitor counts the trials it sees finish itself)
RECOUNT_S = 5.0


def _minimised(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-float(v) if d == "maximize" else float(v) for v, d in zip(values, directions))


def study_front(study: optuna.Study, directions: Sequence[str], constrained: bool) -> IncrementalFront:
    """The front of the trials already in ``study`` (one pass), to continue incrementally."""
    front = IncrementalFront(len(directions))
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.values and (not constrained or is_feasible(t)):
            front.add(_minimised(t.values, directions), t.number)
    return front


class SearchMonitor:
    """Driver-side handling of trial events (thread-safe: Ray callbacks and the heartbeat share it)."""

    def __init__(self, spec: StudySpec, study: optuna.Study, tracker: Any, *, live: bool | None = None,
                 stream: IO[str] | None = None, storage: optuna.storages.BaseStorage | None = None) -> None:
        self.spec, self.study, self.tracker = spec, study, tracker
        self.storage = storage  # the study's storage: a trial's first heartbeat (none without it)
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._lock = threading.RLock()
        self._running: dict[int, int | None] = {}  # trial number -> Optuna trial id
        self._last_epoch: dict[int, int] = {}
        self._top1_so_far: dict[int, list[float]] = {}
        self.finished_now = {COMPLETE: 0, FAIL: 0, PRUNED: 0}
        self._counts = study_counts(study)
        self._counted_at = time.perf_counter()
        self._front = study_front(study, spec.directions, bool(spec.constraints))
        self._started = time.perf_counter()
        self._shown = False

    # ------------------------------------------------------------------ events

    def started(self, number: int, params: Mapping[str, Any], trial_id: int | None = None) -> None:
        with self._lock:
            self._running[number] = trial_id
            self._first_heartbeat(trial_id)
            config = trial_config_dict(self.spec, params, name=f"{self.spec.name}-t{number}")
            self.tracker.trial_started(number, dict(params), config)
            self._draw()

    def epoch(self, number: int, metrics: Mapping[str, Any]) -> None:
        with self._lock:
            epoch = int(metrics.get("epoch", 0))
            if epoch <= self._last_epoch.get(number, 0):
                return  # a retried trial repeating epochs already logged
            self._last_epoch[number] = epoch
            self.tracker.trial_epoch(number, dict(metrics))
            self._record_epoch(number, epoch, metrics)
            self._draw(f"#{number} epoch {epoch} top1 {metrics.get('top1', float('nan')):.1f}")

    def _record_epoch(self, number: int, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Keep the running trial's progress in the Optuna storage: ``svite-search status`` reads
        it from any machine, and optuna-dashboard lists ``top1_history`` with the trial's
        attributes while it runs (multi-objective trials cannot ``report()``)."""
        trial_id = self._running.get(number)
        top1 = metrics.get("top1")
        if trial_id is None or not isinstance(top1, (int, float)):
            return
        history = self._top1_so_far.setdefault(number, [])
        history.append(round(float(top1), 4))
        try:
            trial = optuna.trial.Trial(self.study, trial_id)
            trial.set_user_attr("epoch", epoch)
            trial.set_user_attr("top1_history", list(history))
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            pass  # finished meanwhile: its final attributes say more

    def finished(self, outcome: TrialOutcome) -> None:
        with self._lock:
            self._running.pop(outcome.number, None)
            self.finished_now[outcome.state] = self.finished_now.get(outcome.state, 0) + 1
            self.tracker.trial_finished(outcome.number, outcome.state, outcome.result, outcome.error)
            self._count(outcome.state)
            if outcome.state == COMPLETE and outcome.values and self._is_feasible(outcome):
                self._front.add(_minimised(outcome.values, self.spec.directions), outcome.number)
            if outcome.state == COMPLETE:
                shown = "  ".join(f"{m} {v:.4g}" for m, v in zip(self.spec.metrics, outcome.values or []))
                note = f"#{outcome.number} {shown}"
            else:
                note = f"#{outcome.number} {outcome.state.lower()}: {outcome.error or ''}"[:120]
            self._draw(note, final=not self.live)

    def _count(self, state: str) -> None:
        """Keep the status line's counts: the finished trial added at once, and a recount from
        the storage (which also sees other drivers' trials) at most every :data:`RECOUNT_S`.
        Recounting after every trial would read the whole study per trial, O(n^2) in all."""
        now = time.perf_counter()
        if now - self._counted_at >= RECOUNT_S:
            self._counts, self._counted_at = study_counts(self.study), now
            return
        c = self._counts
        self._counts = Counts(complete=c.complete + (state == COMPLETE), pruned=c.pruned + (state == PRUNED),
                              failed=c.failed + (state == FAIL), running=max(0, c.running - 1), waiting=c.waiting,
                              repeats=c.repeats)

    @property
    def pareto_size(self) -> int:
        """Trials on the Pareto front (feasible ones under constraints), kept incrementally."""
        return len(self._front)

    def _is_feasible(self, outcome: TrialOutcome) -> bool:
        for constraint in self.spec.constraints:
            value = outcome.attrs.get(constraint.metric)
            if value is None or constraint.violation(float(value)) > 0:
                return False
        return True

    def _first_heartbeat(self, trial_id: int | None) -> None:
        """Beat once when a trial starts: a trial lost in its first heartbeat interval is then
        found by its age like any other, not left RUNNING forever."""
        if trial_id is not None and heartbeats_on(self.storage):
            record_beat(self.storage, trial_id)

    def running_trial_ids(self) -> list[int]:
        with self._lock:
            return [i for i in self._running.values() if i is not None]

    # ------------------------------------------------------------------ display

    def status_line(self, note: str = "") -> str:
        c = self._counts
        line = (
            f"{self.spec.name}  {c.finished}/{self.spec.n_trials} done  {len(self._running)} running  "
            f"{c.failed} failed  pareto {self.pareto_size}  {time.perf_counter() - self._started:.0f}s"
        )
        return f"{line}  | {note}" if note else line

    def _draw(self, note: str = "", final: bool = False) -> None:
        line = self.status_line(note)
        if self.live:
            self.stream.write("\r\x1b[2K" + line[:200])
            self.stream.flush()
            self._shown = True
        elif final:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def summary_table(study: optuna.Study, spec: StudySpec, pareto_numbers: set[int] | None = None) -> str:
    """One row per trial: state, objectives, searched parameters, time, and why a trial failed."""
    import pandas as pd

    pareto_numbers = pareto_numbers or set()
    short = {key: key.rsplit(".", 1)[-1] for key in spec.searched}
    if len(set(short.values())) < len(short):
        short = {key: key for key in spec.searched}
    columns = ["#", "state", *spec.metrics, *short.values(), "time_s", "error"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        row: dict[str, Any] = {"#": t.number, "state": t.state.name + (" *" if t.number in pareto_numbers else "")}
        for i, metric in enumerate(spec.metrics):
            row[metric] = t.values[i] if t.values else None
        for key, name in short.items():
            row[name] = t.params.get(key)
        row["time_s"] = round(t.duration.total_seconds(), 1) if t.duration is not None else None
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("pruned_reason")
        row["error"] = str(reason)[:60] if reason else None
        rows.append(row)
    if not rows:
        return "(no trials)"
    frame = pd.DataFrame(rows, columns=columns).dropna(axis=1, how="all")
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4g}".format):
        return frame.to_string(index=False, na_rep="-")
