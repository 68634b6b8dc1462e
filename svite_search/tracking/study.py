"""MLflow tracking of a study: one experiment per study, one parent run, one nested run per trial.

The search driver owns one :class:`StudyTracker` and calls it from its own process only; trials
running under Ray report back to the driver, which writes. One writer per store, plus retries on
"database is locked" (:mod:`._client`), is what keeps the default sqlite store safe with
parallel trials.

Layout in MLflow::

    experiment <study name>
      run <study name>             tags svite.kind=study, svite.study, svite.study_dir
        params: the flattened spec; artifacts: spec.yaml, pareto.json, report/
        run trial-0007             tags svite.kind=trial, svite.trial=7, svite.method, svite.state
          params: the trial's resolved config, flattened; metrics per epoch (step = epoch) and
          final (top1, gmacs, ...); artifacts: config.yaml, result.json, density.json

Resuming: :meth:`StudyTracker.start` finds the study's parent run by its tags and the trial
runs below it by ``svite.trial``, so a resumed study writes into the same runs and never
creates a second run for a trial number. Runs left RUNNING by a killed driver are closed as
FAILED by :meth:`StudyTracker.close_stale`.

Example::

    tracker = StudyTracker(Path("runs/quickstart"), "quickstart", spec)
    tracker.start()
    tracker.trial_started(0, {"method": "dense"}, cfg)
    tracker.trial_epoch(0, {"epoch": 1, "top1": 81.0, "train_loss": 1.2})
    tracker.trial_finished(0, "COMPLETE", result)
    tracker.end(pareto)
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .._mapping import flatten
from .._redact import mask_url
from .._study_dir import report_dir as default_report_dir
from ..errors import first_line
from ._client import (
    default_artifact_location,
    experiment_id,
    is_unreachable,
    log_params,
    make_client,
    metric_key,
    numeric_metrics,
    param_value,
    resolve_tracking_uri,
    retry,
)
from ..search.hooks import NullTracker
from ._density import density_summary

log = logging.getLogger(__name__)

TAG_KIND, TAG_STUDY, TAG_STUDY_DIR = "svite.kind", "svite.study", "svite.study_dir"
TAG_TRIAL, TAG_METHOD, TAG_STATE = "svite.trial", "svite.method", "svite.state"
TAG_ERROR, TAG_PRUNED, TAG_STOPPED = "svite.error", "svite.pruned", "svite.stopped"
PARENT_RUN_ID = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID

#: Optuna trial state -> MLflow run status. A pruned (early-stopped) trial is KILLED and tagged.
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
STALE_REASON = "the process running this trial ended before the trial did (closed on resume)"

#: seconds between attempts to reach a tracking server that went away
PROBE_S = 30.0


def _state_name(state: Any) -> str:
    """``"COMPLETE"`` from a string or an ``optuna.trial.TrialState``."""
    return str(getattr(state, "name", state)).upper()


def _config_dict(config: Any) -> dict[str, Any]:
    """The trial's config with every default filled in (what the run really used), as a mapping.
    A raw mapping that does not validate is logged as it is."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, Mapping):
        from ..config import config_from_dict

        try:
            return config_from_dict(copy.deepcopy(dict(config))).to_dict()
        except Exception:  # noqa: BLE001 - the trial itself reports why its config is invalid
            return dict(config)
    raise TypeError(f"config: expected a RunConfig or a mapping, got {type(config).__name__}")


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))


#: The tracker when tracking is off: every method does nothing.
NullStudyTracker = NullTracker


class StudyTracker:
    """Writes a study to MLflow (see the module docstring for the layout).

    Args:
        study_dir: the study directory; the default store is ``sqlite:///<study_dir>/mlflow.db``
            with artifacts in ``<study_dir>/mlartifacts``.
        study_name: names the experiment (unless the spec's ``tracking.experiment`` does) and
            the parent run.
        spec: the validated study spec as a mapping; logged as params and ``spec.yaml``.
        tracking_uri: a store or server; default the spec's ``tracking.uri``, then
            ``MLFLOW_TRACKING_URI``, then the study's own sqlite file.

    Failures: :meth:`start` raises (a store that cannot be opened is a setup error to see at
    once); a write that still fails after its retries is logged as a warning and skipped, so a
    tracking hiccup never costs a trained trial (the Optuna study stays the record).
    """

    enabled = True

    def __init__(self, study_dir: str | Path, study_name: str, spec: Mapping[str, Any] | None = None,
                 tracking_uri: str | None = None) -> None:
        self.study_dir = Path(study_dir)
        self.study_name = study_name
        from .._redact import mask_credentials

        spec = dict(spec or {})
        tracking = spec.get("tracking") if isinstance(spec.get("tracking"), Mapping) else {}
        self.tracking_uri = resolve_tracking_uri(self.study_dir, tracking_uri or tracking.get("uri"))
        self.spec: dict[str, Any] = mask_credentials(spec)  # what is logged: no password in params or spec.yaml
        self.experiment_name = str(tracking.get("experiment") or study_name)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: Any = None
        self._runs: dict[int, str] = {}
        self._last_step: dict[int, int] = {}
        self._lock = threading.RLock()
        self._behind_since: float | None = None  # when the tracking server went away
        self._next_probe = 0.0
        self.skipped = 0  # writes skipped while the server was away

    # ------------------------------------------------------------------ plumbing

    @property
    def behind(self) -> bool:
        """True while the tracking server cannot be reached: writes are skipped (the Optuna
        study stays the record) and the missing runs are back-filled from it later."""
        return self._behind_since is not None

    def _away(self, err: BaseException) -> None:
        if self._behind_since is None:
            self._behind_since = time.monotonic()
            log.warning("MLflow: the tracking server %s cannot be reached (%s); tracking is behind: the study "
                        "goes on, and its missing runs are back-filled from the Optuna study once the server "
                        "is back (at the end of this search or on the next one)", self.tracking_uri,
                        first_line(err, 200) or type(err).__name__)
        self._next_probe = time.monotonic() + PROBE_S

    def _skip(self) -> bool:
        """While the server is away, skip writes except one probe every :data:`PROBE_S` seconds."""
        if self._behind_since is None or time.monotonic() >= self._next_probe:
            return False
        self.skipped += 1
        return True

    def _back(self) -> None:
        if self._behind_since is not None:
            log.warning("MLflow: the tracking server %s is back after %.0f s (%d writes skipped)",
                        self.tracking_uri, time.monotonic() - self._behind_since, self.skipped)
            self._behind_since = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("StudyTracker.start() has not been called")
        return self._client

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        with self._lock:
            return retry(fn, what=what)

    def _safe(self, fn: Callable[[], Any], what: str) -> Any:
        """A write that must not stop the study: retried, then logged and skipped (and, when
        the server is away, skipped at once until it is back)."""
        if self._skip():
            return None
        try:
            value = self._call(fn, what)
        except Exception as err:
            if is_unreachable(err):
                self._away(err)
            else:
                log.warning("MLflow: %s failed, skipped: %s: %s", what, type(err).__name__, err)
            return None
        self._back()
        return value

    def _log_params(self, run_id: str, params: Mapping[str, Any], existing: Mapping[str, str] | None = None) -> None:
        """Not retried here: callers wrap it in :meth:`_call` or :meth:`_safe`."""
        log_params(self.client, run_id, params, existing)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int,
                     tags: Mapping[str, str] | None = None) -> bool:
        """Metrics (and tags) in as few ``log_batch`` calls as MLflow's limits allow: one, as a rule."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        todo = [Metric(metric_key(k), v, now, step) for k, v in numeric_metrics(dict(metrics)).items()]
        run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(todo), 1 if run_tags else 0), 1000):
            self.client.log_batch(run_id, metrics=todo[i : i + 1000], tags=run_tags if i == 0 else [])
        return True

    def _search(self, filter_string: str) -> list[Any]:
        """All runs of the experiment matching ``filter_string`` (every page), oldest first."""
        from mlflow.entities import ViewType

        runs: list[Any] = []
        token = None
        while True:
            page = self._call(
                lambda: self.client.search_runs(
                    [self.experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=5000, order_by=["attributes.start_time ASC"], page_token=token,
                ),
                "search runs",
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    # ------------------------------------------------------------------ study

    def start(self) -> None:
        """Open the store, the study's experiment and its parent run (reused on resume)."""
        self._client = make_client(self.tracking_uri)
        self.experiment_id = self._experiment()
        directory = str(self.study_dir.resolve())
        quoted = self.study_name.replace("'", "\\'")
        candidates = self._search(f"tags.`{TAG_KIND}` = 'study' AND tags.`{TAG_STUDY}` = '{quoted}'")
        here = [r for r in candidates if r.data.tags.get(TAG_STUDY_DIR) == directory]
        # A study directory moved with its own sqlite store still finds its parent by name.
        own_store = default_artifact_location(self.study_dir, self.tracking_uri) is not None
        parent = (here or (candidates if own_store else []) or [None])[0]
        if parent is None:
            run = self._call(
                lambda: self.client.create_run(
                    self.experiment_id, run_name=self.study_name,
                    tags={TAG_KIND: "study", TAG_STUDY: self.study_name, TAG_STUDY_DIR: directory},
                ),
                "create the study run",
            )
            self.parent_run_id = run.info.run_id
            existing: Mapping[str, str] = {}
        else:
            self.parent_run_id = parent.info.run_id
            existing = parent.data.params
            self._call(lambda: self.client.update_run(self.parent_run_id, status="RUNNING"), "reopen the study run")
            resumes = int(parent.data.tags.get("svite.resumes", "0")) + 1
            self._call(lambda: self.client.set_tag(self.parent_run_id, "svite.resumes", str(resumes)), "tag")
            if TAG_STOPPED in parent.data.tags:  # the stop it records is over
                self._safe(lambda: self.client.delete_tag(self.parent_run_id, TAG_STOPPED), "untag")
        self._call(lambda: self._log_params(self.parent_run_id, flatten(self.spec), existing), "log spec params")
        spec_text = yaml.safe_dump(self.spec, sort_keys=False)
        self._call(lambda: self.client.log_text(self.parent_run_id, spec_text, "spec.yaml"), "log spec.yaml")
        self._runs = {}
        for run in self._search(f"tags.`{PARENT_RUN_ID}` = '{self.parent_run_id}'"):
            number = run.data.tags.get(TAG_TRIAL)
            if number is not None and number.lstrip("-").isdigit():
                self._runs.setdefault(int(number), run.info.run_id)  # oldest wins
        log.info("MLflow: study %r in %s (parent run %s, %d trial runs)", self.study_name, mask_url(self.tracking_uri),
                 self.parent_run_id, len(self._runs))

    def _experiment(self) -> str:
        location = default_artifact_location(self.study_dir, self.tracking_uri)
        return experiment_id(self.client, self.experiment_name, location, self._call)

    @property
    def trial_runs(self) -> dict[int, str]:
        """Trial number -> MLflow run id, for the trials this study has runs for."""
        return dict(self._runs)

    # ------------------------------------------------------------------ trials

    def trial_started(self, number: int, params: Mapping[str, Any], config: Any = None) -> None:
        """Open (or, on resume, reopen) trial ``number``'s nested run and log its settings."""
        number = int(number)
        if self._skip():
            return
        cfg = _config_dict(config)
        params = dict(params or {})
        method = str(params.get("method") or cfg.get("method") or self.spec.get("method") or "")
        try:
            run_id = self._runs.get(number)
            if run_id is None:
                tags = {PARENT_RUN_ID: self.parent_run_id, TAG_KIND: "trial", TAG_STUDY: self.study_name,
                        TAG_TRIAL: str(number), TAG_METHOD: method, TAG_STATE: "RUNNING",
                        "svite.searched": ", ".join(sorted(params))}
                run = self._call(
                    lambda: self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}", tags=tags),
                    "create trial run",
                )
                run_id = self._runs[number] = run.info.run_id
                existing: Mapping[str, str] = {}
            else:
                run = self._call(lambda: self.client.get_run(run_id), "get trial run")
                existing = run.data.params
                self._call(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen trial run")
                self._call(lambda: self.client.set_tag(run_id, TAG_STATE, "RUNNING"), "tag")
            merged = {**flatten(cfg), **{k: v for k, v in flatten(params).items() if k not in flatten(cfg)}}
            self._call(lambda: self._log_params(run_id, merged, existing), "log trial params")
            if cfg:
                text = yaml.safe_dump(cfg, sort_keys=False)
                self._call(lambda: self.client.log_text(run_id, text, "config.yaml"), "log config.yaml")
        except Exception as err:
            if is_unreachable(err):
                self._away(err)
            else:
                log.warning("MLflow: trial %d could not be opened: %s: %s", number, type(err).__name__, err)
            return
        self._back()

    def trial_epoch(self, number: int, metrics: Mapping[str, Any]) -> None:
        """Log one epoch's metrics with the epoch as step."""
        number = int(number)
        run_id = self._runs.get(number)
        if run_id is None:
            return
        step = int(metrics.get("epoch", self._last_step.get(number, 0) + 1))
        values = {k: v for k, v in metrics.items() if k != "epoch"}
        if self._safe(lambda: self._log_metrics(run_id, values, step), f"trial {number} epoch {step}"):
            self._last_step[number] = max(step, self._last_step.get(number, 0))

    def _logged_up_to(self, number: int, run_id: str) -> int:
        """Last epoch logged for a trial (asks the store once when this process did not log it)."""
        if number not in self._last_step:
            history = self._safe(lambda: self.client.get_metric_history(run_id, "top1"), "metric history") or []
            self._last_step[number] = max((m.step for m in history), default=0)
        return self._last_step[number]

    def trial_finished(self, number: int, state: Any, result: Mapping[str, Any] | None = None,
                       error: str | None = None) -> None:
        """Close trial ``number``'s run: epochs not logged yet, final metrics, the per-layer
        density summary, and the status (COMPLETE -> FINISHED, FAIL -> FAILED with the reason
        as ``svite.error``, PRUNED -> KILLED tagged ``svite.pruned``)."""
        number = int(number)
        name = _state_name(state)
        result = dict(result or {})
        if number not in self._runs:
            self.trial_started(number, {"method": result["method"]} if result.get("method") else {}, None)
        run_id = self._runs.get(number)
        if run_id is None:
            return
        done = self._logged_up_to(number, run_id)
        for epoch in result.get("history") or []:
            if isinstance(epoch, Mapping) and int(epoch.get("epoch", 0)) > done:  # resumed, or never reported
                self.trial_epoch(number, epoch)
        final = {k: v for k, v in result.items() if k != "history"}
        step = int(final.get("epochs") or self._last_step.get(number, 0))
        history = [e for e in result.get("history") or [] if isinstance(e, Mapping)]
        last = history[-1] if history and int(history[-1].get("epoch", -1)) == step else {}
        fresh = {k: v for k, v in final.items() if k not in last or last[k] != v}  # no second point per step
        if final:
            self._safe(lambda: self.client.log_text(run_id, _json(result), "result.json"), "log result.json")
        summary = density_summary(final)
        if summary:
            self._safe(lambda: self.client.log_text(run_id, _json(summary), "density.json"), "log density.json")
            fresh.update({f"layer_density_{k[:3]}": summary[k] for k in ("min_layer", "max_layer") if k in summary})
        tags = {TAG_STATE: name}
        if name == "FAIL":
            tags[TAG_ERROR] = (error or "failed (no reason given)")[:5000]
        elif name == "PRUNED":
            tags[TAG_PRUNED] = (error or "stopped early by the pruner or scheduler")[:5000]
        # final metrics, layer densities and state tags in one call (one store transaction)
        self._safe(lambda: self._log_metrics(run_id, fresh, step, tags=tags), f"trial {number} final metrics and tags")
        status = RUN_STATUS.get(name, "FAILED")
        self._safe(lambda: self.client.set_terminated(run_id, status=status), f"end trial {number}")

    def reconcile(self, study: Any, study_dir: str | Path, logged_elsewhere: Callable[[Any], bool] | None = None) -> list[int]:
        """Back-fill the runs the study's finished trials are missing and close those left open
        (see :mod:`.backfill`); returns the trial numbers written."""
        from .backfill import backfill_study

        return backfill_study(self, study, study_dir, logged_elsewhere)

    def close_stale(self, numbers: Iterable[int] | None = None) -> list[int]:
        """End as FAILED the trial runs still RUNNING (all, or those of ``numbers``): their
        process died with them. Returns the trial numbers closed."""
        wanted = None if numbers is None else {int(n) for n in numbers}
        closed = []
        for number, run_id in sorted(self._runs.items()):
            if wanted is not None and number not in wanted:
                continue
            run = self._safe(lambda: self.client.get_run(run_id), "get trial run")
            if run is None or run.info.status not in ("RUNNING", "SCHEDULED"):
                continue
            self._safe(lambda: self.client.set_tag(run_id, TAG_STATE, "FAIL"), "tag")
            self._safe(lambda: self.client.set_tag(run_id, TAG_ERROR, STALE_REASON), "tag")
            self._safe(lambda: self.client.set_terminated(run_id, status="FAILED"), "close stale run")
            closed.append(number)
        return closed

    def end(self, pareto: list[dict[str, Any]], report_dir: str | Path | None = None) -> None:
        """Log the final Pareto front (``pareto.json``) and the report directory on the parent
        run, and end it FINISHED. ``report_dir`` defaults to ``<study_dir>/report`` if present."""
        if self.parent_run_id is None:
            return
        run_id = self.parent_run_id
        self._safe(lambda: self.client.log_text(run_id, _json(pareto), "pareto.json"), "log pareto.json")
        self._safe(lambda: self._log_metrics(run_id, {"pareto_size": len(pareto)}, 0), "log pareto size")
        report = Path(report_dir) if report_dir is not None else default_report_dir(self.study_dir)
        if report.is_dir():
            self._safe(lambda: self.client.log_artifacts(run_id, str(report), "report"), "log the report")
        self._safe(lambda: self.client.set_terminated(run_id, status="FINISHED"), "end the study run")


    def stop(self, status: str, reason: str) -> None:
        """End the study run before its target: ``KILLED`` when a signal stopped the search,
        ``FAILED`` when the machine did; ``svite.stopped`` says why. A resume reopens it."""
        if self.parent_run_id is None:
            return
        run_id = self.parent_run_id
        self._safe(lambda: self.client.set_tag(run_id, TAG_STOPPED, reason[:5000]), "tag the study run")
        self._safe(lambda: self.client.set_terminated(run_id, status=status), "end the study run")


def make_study_tracker(study_dir: str | Path, study_name: str, spec: Mapping[str, Any] | None = None,
                       tracking_uri: str | None = None, enabled: bool | None = None) -> Any:
    """The tracker a study asks for: a :class:`StudyTracker`, its per-trial writes made on a
    background thread (:class:`.background.BackgroundTracker`), unless ``enabled`` (default: the
    spec's ``tracking.enabled``, else on) is false or MLflow is not installed (then a warning
    and a :class:`NullStudyTracker`)."""
    tracking = (spec or {}).get("tracking")
    if enabled is None:
        enabled = bool(tracking.get("enabled", True)) if isinstance(tracking, Mapping) else True
    if not enabled:
        return NullStudyTracker()
    try:
        import mlflow  # noqa: F401
    except ImportError:
        log.warning("MLflow is not installed (pip install 'svite-search[mlflow]'): the study is not tracked")
        return NullStudyTracker()
    from .background import BackgroundTracker

    return BackgroundTracker(StudyTracker(study_dir, study_name, spec, tracking_uri))
