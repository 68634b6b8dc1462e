"""The Ray executor: Ray Tune runs the trials, the study's own Optuna study chooses them.

How it fits together (all Optuna and MLflow writes happen in this driver process):

- :class:`StudySearcher` is a plain ``ray.tune.search.Searcher`` on the same ask -> suggest ->
  record path as the local executor (:mod:`.local`): ``study.ask()`` on the study's persistent
  storage (interrupted trials' reruns first, then enqueued and grid points), a claim counted
  against every driver's trials under the study's claim lock (:func:`.study.claim_trial`), the define-by-run
  parameters of :func:`.space.suggest_params` (so conditional parameters work), and
  :func:`.study.record_outcome` with the trial's result metrics and reason. It also decides
  when the study has enough trials.
- Each Tune trial runs :func:`.ray_trial.trial_function` (or, with
  ``executor.workers_per_trial > 1``, :func:`.ray_trial.distributed_trial`), which reports
  every epoch and ends with one final report carrying its outcome.
- :class:`DriverCallback` (a ``ray.tune.Callback``) turns Tune's trial events into the
  monitor's: MLflow runs, heartbeats and the progress line.

Resources come from the spec: ``cpus_per_trial`` and (fractional) ``gpus_per_trial`` per trial
(per worker when distributed), ``max_concurrent`` trials at once, ``max_retries`` reruns of a
trial lost to an infrastructure failure (a worker or node dying; a trial that raises or whose
loss is not finite fails at once, a rerun would fail again). ``search.early_stopping`` is the
rung engine's Tune trial scheduler (:func:`_scheduler`, :mod:`.early_stopping._ray`: the same
rules and rung records as the local executor); a trial it stops is PRUNED with its last values
and the rung in the reason. Ray is joined at ``executor.address`` or ``RAY_ADDRESS`` when given, else
started locally for the search and stopped on every way out (:mod:`.ray_session`); Tune's
results go to ``<study_dir>/ray``.

Stopping: SIGINT and SIGTERM are the driver's, not Tune's (Tune's own handler would end
``fit()`` as a success with trials left RUNNING); they, and a trial's infrastructure error, fail
and requeue the running trials and stop the search (:mod:`.stop`). The searcher counts the
shared storage's trials, so several drivers on one study run ``n_trials`` together.

Only public Optuna and Ray APIs are used here: a trial's storage id (heartbeats, reading a
trial back) comes from the storage's own lookup by study name and trial number.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from . import ray_session
from .early_stopping.promotion import next_promotion, queue_promotion
from .monitor import SearchMonitor
from .objective import FAIL, TrialOutcome
from .ray_session import RAY_DIR
from .ray_trial import (
    FINAL_KEY,
    TRIAL_KEY,
    TrialContext,
    distributed_trial,
    outcome_from_result,
    trial_function,
    trial_info,
)
from .space import suggest_params
from .spec import EPOCH_METRICS, StudySpec
from .stop import InfrastructureStop, as_stopped, claim_signals, interrupted_reason
from .study import (
    INTERRUPTED,
    RETRY_ATTR,
    ClaimLock,
    StudyHandle,
    claim_trial,
    queue_again,
    record_outcome,
    RepeatGuard,
    retries_first,
    study_counts,
)

log = logging.getLogger(__name__)

__all__ = ["DriverCallback", "StudySearcher", "run_ray"]


def _error_text(trial: Any) -> str:
    """The last line of a Tune trial's error file (the exception), else a pointer to it."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    if lines:
        return f"Ray trial failed: {lines[-1]}"[:2000]
    return f"Ray trial failed (see {path})" if path else "Ray trial failed"


_EPOCH_KEYS = ("epoch", "step", "train_loss", "val_loss", "top1", "top5", "lr")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class _Claim:
    """A study trial this driver asked for one Tune trial, until its outcome is recorded."""

    trial: optuna.Trial
    trial_id: int  # the storage's id of the trial: heartbeats, reading it back
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.trial.number


class StudySearcher(Searcher):
    """The study's trials for Ray Tune (see the module docstring): asks the study, suggests the
    parameters, records each outcome with its reason and metrics, and says when the study (all
    its drivers together) has its trials. The Optuna storage is its whole state."""

    def __init__(self, handle: StudyHandle, monitor: SearchMonitor, *, early_stopping: Any) -> None:
        spec = handle.spec
        super().__init__(metric=list(spec.metrics),
                         mode=["max" if d == "maximize" else "min" for d in spec.directions])
        self.spec, self.monitor, self.early_stopping = spec, monitor, early_stopping
        self.study = retries_first(handle.study, handle.storage)
        self.storage = handle.storage
        self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self._claim_lock = ClaimLock(handle.url, self.study.study_name)
        self._failures = 0
        self._repeats = RepeatGuard(spec.search)
        #: ``"PATH: cause"`` once a trial hit an infrastructure error: the search stops
        self.stop_reason: str | None = None
        self._claims: dict[str, _Claim] = {}  # Tune trial id -> the study trial it runs
        self._tune_trials: dict[str, Any] = {}  # Tune trial id -> Tune Trial (for error files)

    # ------------------------------------------------------------------ Tune's searcher API

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        """The search space, metrics and directions are the study's: a Tune ``param_space``,
        ``metric`` or ``mode`` cannot replace them (Tune then refuses a space to sample)."""
        return False

    def save(self, checkpoint_path: str) -> None:
        """Nothing to checkpoint in Tune: the Optuna storage is the state."""
        Path(checkpoint_path).write_text(json.dumps({"study": self.spec.name, "state": "in the Optuna storage"}))

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: resuming the study resumes the search (:mod:`.study`)."""

    def __getstate__(self) -> dict[str, Any]:
        return {}  # nothing to pickle: the study and the monitor live in this driver only

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's Tune config, None to wait (enough trials are running, here or in
        another driver; another starts only if one fails), or FINISHED."""
        if self._enough():
            return Searcher.FINISHED
        study, n_trials = self.study, self.spec.n_trials
        if self._repeats.spent is not None and self._next_promotion() is None:
            return None  # the sampler is spent and no trial waits: only a running trial's stop can make one
        while True:
            trial = claim_trial(study, self.storage, n_trials, self._claim_lock, before_ask=self._queue_promotion)
            if trial is None:
                return None  # enough trials run, here or in another driver
            storage_id = self._storage_id(trial.number)
            claim = self._claims[trial_id] = _Claim(trial, storage_id)  # a stop from here on requeues it
            claim.params = suggest_params(trial, self.spec)
            if not self._repeats.skipped(study, trial):
                break
            del self._claims[trial_id]  # recorded: nothing left to requeue
            if self._repeats.spent is not None:
                return Searcher.FINISHED if self._enough() else None
        info = trial_info(trial.number, claim.params, trial.user_attrs.get(RETRY_ATTR))
        return {**claim.params, TRIAL_KEY: info}  # the parameters at the top too: Tune's tables show them

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        claim = self._claims.get(trial_id)
        if claim is None or result.get(FINAL_KEY):
            return
        self.monitor.epoch(claim.number, {k: v for k, v in result.items()
                                          if k in _EPOCH_KEYS or ("." in k and "/" not in k)})
        metric = self.spec.metrics[0]
        if len(self.spec.metrics) == 1 and metric in EPOCH_METRICS and _finite(result.get(metric)):
            claim.trial.report(float(result[metric]), int(result.get("epoch", 0)))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        claim = self._claims.pop(trial_id, None)
        tune_trial = self._tune_trials.pop(trial_id, None)
        if claim is None:
            return  # not this searcher's, or recorded already (the search is stopping)
        number = claim.number
        if error:
            outcome = TrialOutcome(number, FAIL, error=_error_text(tune_trial))
        else:
            outcome = outcome_from_result(number, result, early_stopping=self.early_stopping)
        if outcome.stop is not None and self.stop_reason is None:
            self.stop_reason = outcome.stop  # DriverCallback stops the search at the next step
        try:
            record_outcome(self.study, claim.trial, outcome, self.spec)
            if outcome.error == INTERRUPTED or outcome.stop is not None:
                self._queue_again(claim, self._frozen(claim))
        except Exception as err:  # never lose the Tune loop over one trial's bookkeeping
            log.warning("trial %d: could not record its outcome: %s: %s", number, type(err).__name__, err)
            outcome = TrialOutcome(number, FAIL, error=f"recording failed: {err}")
            try:
                self.study.tell(claim.trial, state=TrialState.FAIL, skip_if_finished=True)
            except Exception:
                pass
        if outcome.state == FAIL and outcome.stop is None:
            self._failures += 1
        self.monitor.finished(outcome)

    # ------------------------------------------------------------------ the driver's

    def register(self, trial_id: str, tune_trial: Any) -> None:
        """A Tune trial started: the monitor opens its run and its heartbeats."""
        self._tune_trials[trial_id] = tune_trial
        claim = self._claims.get(trial_id)
        if claim is not None:
            self.monitor.started(claim.number, dict(claim.params), claim.trial_id)

    def interrupt_live(self, reason: str) -> list[int]:
        """Fail the trials still running with ``reason`` and queue their points again (the
        search is stopping); returns their numbers."""
        stopped = []
        for trial_id, claim in list(self._claims.items()):
            self._claims.pop(trial_id, None)
            frozen = self._frozen(claim)
            if frozen.state != TrialState.RUNNING:
                continue
            outcome = TrialOutcome(claim.number, FAIL, error=reason)
            record_outcome(self.study, claim.trial, outcome, self.spec)
            self._queue_again(claim, frozen)
            self.monitor.finished(outcome)
            stopped.append(claim.number)
        return stopped

    def short_reason(self) -> str | None:
        """Why the search ended before ``n_trials`` (None when it did not)."""
        if self._repeats.spent is not None:
            return self._repeats.spent
        if self._failures >= self.spec.max_failures:
            return f"{self._failures} trials failed in this run (search.max_failures {self.spec.max_failures})"
        return None

    def _enough(self) -> bool:
        """The study (every driver's trials in the shared storage) has its trials, this run hit
        ``max_failures``, it skipped ``max_repeats_in_a_row`` repeats in a row, a grid has no
        point left, or the machine failed. Under ``promote`` a spent sampler ends the search only
        once no trial runs and none waits: the waiting trials go on past their rungs' quota, and a
        running trial may still stop at a rung and wait."""
        spec = self.spec
        if self.stop_reason is not None or self._failures >= spec.max_failures:
            return True
        counts = study_counts(self.study)
        if counts.finished >= spec.n_trials:
            return True
        if self._repeats.spent is not None:
            return not (spec.search.early_stopping.promote and (self._claims or self._next_promotion() is not None))
        return spec.search.sampler == "grid" and counts.waiting <= 0 and self._next_promotion() is None

    def _next_promotion(self) -> Any:
        """The waiting trial that would resume now (``promote: true``; past its rung's quota once
        the sampler is spent), None otherwise."""
        if self.early_stopping is None or not self.spec.search.early_stopping.promote:
            return None
        return next_promotion(self.early_stopping.engine, self.study.get_trials(deepcopy=False),
                              past_quota=self._repeats.spent is not None)

    def _queue_promotion(self) -> None:
        """Under the claim lock, before the ask: queue the next promotion, which the ask takes."""
        if self.early_stopping is not None and self.spec.search.early_stopping.promote:
            queue_promotion(self.study, self.early_stopping.engine, past_quota=self._repeats.spent is not None)

    def _storage_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def _frozen(self, claim: _Claim) -> FrozenTrial:
        return self.storage.get_trial(claim.trial_id)

    def _queue_again(self, claim: _Claim, frozen: FrozenTrial) -> None:
        """Queue a stopped trial's whole point again: an enqueued trial's fixed parameters and
        what was suggested (also a suggestion the stop cut short)."""
        fixed = frozen.system_attrs.get("fixed_params") or {}
        queue_again(self.study, claim.number, {**fixed, **frozen.params, **claim.params})


class DriverCallback(tune.Callback):
    """Tune's trial events on the driver -> the searcher's bookkeeping and the monitor."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.register(trial.trial_id, trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.searcher.stop_reason is not None:  # the machine failed: stop every trial now
            raise InfrastructureStop(self.searcher.stop_reason)


# ----------------------------------------------------------------------------- running


def _ensure_ray(spec: StudySpec, study_dir: Path, verbose: bool) -> tuple[bool, str | None]:
    """Connect to Ray: the running instance, a cluster (``executor.address``/``RAY_ADDRESS``) or
    a local instance started here (:mod:`.ray_session`). Returns whether this call started or
    joined it, and the local instance's session folder."""
    import ray

    if ray.is_initialized():
        return False, None
    address = spec.executor.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=verbose)
        return True, None
    session_dir = ray_session.start_local(
        study_dir,
        num_cpus=spec.executor.num_cpus or os.cpu_count(),
        num_gpus=spec.executor.num_gpus,
        include_dashboard=False,
        log_to_driver=verbose,
    )
    return True, session_dir


def _trainable(spec: StudySpec, study_dir: Path) -> Any:
    context = TrialContext(spec, str(study_dir.resolve()))
    ex = spec.executor
    if ex.workers_per_trial > 1:
        # the workers hold the resources; the Tune trial only waits for them
        return tune.with_resources(tune.with_parameters(distributed_trial, context=context), {"cpu": 0.01})
    resources = {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(trial_function, context=context), resources)


def _scheduler(spec: StudySpec, handle: StudyHandle) -> TrialScheduler | None:
    """``search.early_stopping`` as a Tune trial scheduler (the rung engine's, with its records in
    the study storage), or None for none.

    A trial the scheduler stops ends without its final report, and the searcher records it as
    PRUNED with the scheduler's reason and last values (:func:`.ray_trial.outcome_from_result`).
    The scores come in that final report, after the last epoch's: a scheduler must let a trial
    that reached its last epoch finish (the rung engine's rungs all lie below ``train.epochs``),
    or every trial that survives would be PRUNED unscored."""
    if spec.search.early_stopping.kind == "none":
        return None
    from .early_stopping._ray import RungScheduler

    return RungScheduler(spec, handle.storage, trial_key=TRIAL_KEY, final_key=FINAL_KEY)


def run_ray(handle: StudyHandle, monitor: SearchMonitor, *, verbose: bool = False) -> str | None:
    """Run the study's missing trials on Ray Tune (see the module docstring). Returns why it
    stopped short of ``n_trials`` (None when it did not); a signal or an infrastructure error
    fails and requeues the running trials, stops Ray and raises (:mod:`.stop`)."""
    spec = handle.spec
    if study_counts(handle.study).finished >= spec.n_trials:
        return None
    # Tune's own SIGINT handler ends fit() "successfully" with trials left RUNNING: ours stops the study.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0: our display only
    searcher: StudySearcher | None = None
    started, session_dir = _ensure_ray(spec, handle.study_dir, verbose)
    try:
        claim_signals()  # ray.init replaced the SIGTERM handler
        ex = spec.executor
        scheduler = _scheduler(spec, handle)
        searcher = StudySearcher(handle, monitor, early_stopping=scheduler)
        tuner = tune.Tuner(
            _trainable(spec, handle.study_dir),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,  # the searcher says when the study has enough trials
                max_concurrent_trials=ex.max_concurrent,
                reuse_actors=ex.workers_per_trial == 1,
            ),
            run_config=tune.RunConfig(
                name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((handle.study_dir / RAY_DIR).resolve()),
                callbacks=[DriverCallback(searcher)],
                failure_config=tune.FailureConfig(max_failures=ex.max_retries),
                verbose=0,
            ),
        )
        tuner.fit()
        return searcher.short_reason()
    except BaseException as caught:  # a signal, the machine, or a failure of Ray itself
        err = as_stopped(caught)
        if searcher is not None:
            signal_name = getattr(err, "signal_name", None)
            if isinstance(err, InfrastructureStop):
                reason = f"infrastructure: {err} (rerun queued)"
            else:
                reason = interrupted_reason(signal_name) if signal_name else INTERRUPTED
            searcher.interrupt_live(reason)
        if err is caught:
            raise
        raise err from None
    finally:
        if session_dir is not None:
            ray_session.stop_local(handle.study_dir, session_dir, keep_logs=verbose)  # -v keeps Ray's logs
        elif started:
            import ray

            ray.shutdown()
