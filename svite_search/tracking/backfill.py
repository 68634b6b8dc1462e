"""Back-fill MLflow from the Optuna study: the study is the record, MLflow its mirror.

A study's MLflow runs can fall behind its Optuna trials: the tracking server was away while
trials finished (tracking never stops a study), the driver was killed between telling Optuna
and closing a run, or the study's own ``mlflow.db`` was deleted. :func:`backfill_study` brings
the mirror up to date from what the study directory and the storage hold:

* a finished trial without a run gets one (its parameters, its resolved ``config.yaml``, every
  epoch of its ``result.json``, its final metrics and status), nested under the study's run;
* a finished trial whose run is still open (RUNNING) is closed with its final state.

A repeat skipped untrained (``search.repeats: skip``) gets no run: nothing trained.
It never creates a second run for a trial number (the tracker finds a study's runs by their
tags), so running it again changes nothing.

Example::

    tracker.start()
    backfill_study(tracker, handle.study, handle.study_dir)   # -> [numbers of runs written]
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import yaml
from optuna.trial import TrialState

from .._study_dir import RUN_CONFIG, RUN_RESULT, trial_dir
from ..search.study import is_skipped_repeat, trial_attrs

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
OPEN = ("RUNNING", "SCHEDULED")
TAG_BACKFILLED = "svite.backfilled"  # on a run written from the study after its trial ended


def finished_result(study_dir: Path, trial: Any) -> dict[str, Any]:
    """A finished trial's result for the tracker: its run's ``result.json`` plus its user
    attributes (all a failed trial or a trial of another machine has)."""
    path = trial_dir(study_dir, trial.number) / RUN_RESULT
    result: dict[str, Any] = {}
    if path.is_file():
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            result = {}
    for key, value in trial_attrs(trial).items():
        result.setdefault(key, value)
    return result


def _config(study_dir: Path, number: int) -> dict[str, Any] | None:
    path = trial_dir(study_dir, number) / RUN_CONFIG
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _reason(trial: Any) -> str | None:
    return trial.user_attrs.get("fail_reason") or trial.user_attrs.get("pruned_reason")


def backfill_study(tracker: Any, study: Any, study_dir: str | Path,
                   logged_elsewhere: Callable[[Any], bool] | None = None) -> list[int]:
    """Write the MLflow runs the study's finished trials are missing, and close the runs left
    open (see the module docstring). Returns the trial numbers written; nothing when tracking is
    off or the tracking server is still away.

    ``logged_elsewhere(trial)`` names the trials another live driver ran: that driver logs them
    itself (perhaps a moment later, from its background writer), so writing them here would give
    a trial two runs."""
    if not getattr(tracker, "enabled", False) or getattr(tracker, "parent_run_id", None) is None:
        return []
    study_dir = Path(study_dir)
    written: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        if is_skipped_repeat(trial) or (logged_elsewhere is not None and logged_elsewhere(trial)):
            continue  # a skipped repeat never trained: it has no run to mirror
        run_id = tracker.trial_runs.get(trial.number)
        if run_id is not None:
            try:
                status = tracker.client.get_run(run_id).info.status
            except Exception as err:  # noqa: BLE001 - a mirror that cannot be read is left as it is
                log.warning("MLflow: trial %d's run could not be read: %s", trial.number, err)
                continue
            if status not in OPEN:
                continue
        else:
            tracker.trial_started(trial.number, dict(trial.params), _config(study_dir, trial.number))
            new_run = tracker.trial_runs.get(trial.number)
            if new_run is None:
                break  # the server is (still) away: the next search back-fills
            tracker._safe(lambda: tracker.client.set_tag(new_run, TAG_BACKFILLED, "true"), "tag")
        tracker.trial_finished(trial.number, trial.state.name, finished_result(study_dir, trial), _reason(trial))
        if getattr(tracker, "behind", False):
            break
        written.append(trial.number)
    if written:
        log.warning("MLflow: back-filled the runs of trials %s from the Optuna study", written)
    return written
