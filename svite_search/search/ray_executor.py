"""The Ray executor: Ray Tune runs the trials, Ray Tune's ``OptunaSearch`` drives the study.

How it fits together (all Optuna and MLflow writes happen in this driver process):

- :class:`StudySearcher` is an ``OptunaSearch`` on the study's own persistent storage. It asks
  the study for each trial's parameters (define-by-run, so conditional parameters work and
  enqueued, grid and rerun trials come first), decides when the study has enough trials, and
  tells the study how each trial ended, with its result metrics as user attributes.
- Each Tune trial runs :func:`ray_trial` (or, with ``executor.workers_per_trial > 1``,
  :func:`distributed_trial`: Ray Train's ``TorchTrainer`` inside the Tune trial, DDP over
  ``workers_per_trial`` workers, gloo on CPU). A trial reports every epoch with
  ``ray.tune.report`` and ends with one final report carrying its outcome.
- :class:`DriverCallback` (a ``ray.tune.Callback``) turns Tune's trial events into the
  monitor's: MLflow runs, heartbeats and the progress line.

Resources come from the spec: ``cpus_per_trial`` and (fractional) ``gpus_per_trial`` per trial
(per worker when distributed), ``max_concurrent`` trials at once, ``max_retries`` reruns of a
trial lost to an infrastructure failure (a worker or node dying; a trial that raises or whose
loss is not finite fails at once, a rerun would fail again). ``search.early_stopping`` adds
the rung engine's scheduler (:mod:`.early_stopping._ray`; a stopped trial is PRUNED). Ray is joined at
``executor.address`` or ``RAY_ADDRESS`` when given, else started locally for the search and
stopped on every way out (:mod:`.ray_session`); Tune's results go to ``<study_dir>/ray``.

Stopping: SIGINT and SIGTERM are the driver's, not Tune's (Tune's own handler would end
``fit()`` as a success with trials left RUNNING); they, and a trial's infrastructure error, fail
and requeue the running trials and stop the search (:mod:`.stop`). The searcher counts the
shared storage's trials, so several drivers on one study run ``n_trials`` together.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from . import ray_session
from .objective import FAIL, PRUNED, TrialOutcome, run_trial
from .monitor import SearchMonitor
from .space import suggest_params
from .spec import EPOCH_METRICS, StudySpec
from .stop import InfrastructureStop, as_stopped, claim_signals, interrupted_reason
from .study import (
    DRIVER_ATTR,
    INTERRUPTED,
    RETRY_ATTR,
    StudyHandle,
    claim_is_surplus,
    driver_id,
    give_back,
    live_running,
    make_sampler,
    queue_again,
    record_outcome,
    retries_first,
    study_counts,
)

log = logging.getLogger(__name__)

RAY_DIR = "ray"
TRIAL_KEY = "svite_trial"  # the Tune config entry with the Optuna trial's number and parameters
FINAL_KEY, OUTCOME_KEY = "svite_final", "svite_outcome"


@dataclass(frozen=True)
class TrialContext:
    """What every Ray trial needs besides its parameters (shipped once to the object store)."""

    spec: StudySpec
    study_dir: str


# ----------------------------------------------------------------------------- trial side


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def epoch_payload(spec: StudySpec, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One epoch's report. Every objective key is present (NaN until known): Tune checks that
    each result carries the searcher's metrics."""
    payload = {metric: float("nan") for metric in spec.metrics}
    payload["top1"] = float("nan")
    payload.update(_scalar_metrics(metrics))
    payload[FINAL_KEY] = False
    return payload


def final_payload(spec: StudySpec, outcome: TrialOutcome, last_epoch: int) -> dict[str, Any]:
    """The last report of a trial: its objectives and the whole outcome (JSON)."""
    payload: dict[str, Any] = {metric: float("nan") for metric in spec.metrics}
    payload["top1"] = float("nan")
    if outcome.values:
        payload.update(dict(zip(spec.metrics, outcome.values)))
    if outcome.attrs.get("top1") is not None:
        payload["top1"] = outcome.attrs["top1"]
    payload["epoch"] = last_epoch
    payload[FINAL_KEY] = True
    payload[OUTCOME_KEY] = json.dumps(outcome.to_dict(), default=str)
    return payload


def _set_threads(spec: StudySpec) -> None:
    import torch

    torch.set_num_threads(max(1, int(round(spec.executor.cpus_per_trial))))


def ray_trial(config: dict[str, Any], context: TrialContext) -> None:
    """A Tune function trainable: one trial in one process."""
    from .._torchvision_guard import ensure_torchvision

    ensure_torchvision()  # before timm (the trial imports it)

    info = config[TRIAL_KEY]
    spec = context.spec
    _set_threads(spec)
    epochs = [0]

    def on_epoch(metrics: dict[str, Any]) -> None:
        epochs[0] = int(metrics.get("epoch", epochs[0]))
        tune.report(epoch_payload(spec, metrics))

    outcome = run_trial(spec, context.study_dir, int(info["number"]), info["params"], on_epoch=on_epoch,
                        retry_of=info.get("retry_of"))
    tune.report(final_payload(spec, outcome, epochs[0]))


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a distributed trial (the process group is set up by Ray Train)."""
    import ray.train

    from .._torchvision_guard import ensure_torchvision

    ensure_torchvision()

    context: TrialContext = loop_config["context"]
    info = loop_config["info"]
    spec = context.spec
    _set_threads(spec)
    epochs = [0]

    def on_epoch(metrics: dict[str, Any]) -> None:
        epochs[0] = int(metrics.get("epoch", epochs[0]))
        ray.train.report(epoch_payload(spec, metrics))

    outcome = run_trial(spec, context.study_dir, int(info["number"]), info["params"], on_epoch=on_epoch)
    ray.train.report(final_payload(spec, outcome, epochs[0]))


def distributed_trial(config: dict[str, Any], context: TrialContext) -> None:
    """A Tune function trainable that trains one trial data-parallel on several workers with Ray
    Train's ``TorchTrainer`` (the trainer's DDP path; the sparse engine keeps masks identical
    on every worker). Rank 0's reports reach Tune through ``TuneReportCallback``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..train.device import ddp_backend

    info = config[TRIAL_KEY]
    spec = context.spec
    ex = spec.executor
    worker_resources: dict[str, float] = {"CPU": ex.cpus_per_trial}
    if ex.gpus_per_trial:
        worker_resources["GPU"] = ex.gpus_per_trial
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"context": context, "info": info},
        scaling_config=ScalingConfig(num_workers=ex.workers_per_trial, use_gpu=ex.gpus_per_trial > 0,
                                     resources_per_worker=worker_resources),
        torch_config=TorchConfig(backend=ddp_backend(ex.backend, gpus_per_worker=ex.gpus_per_trial)),
        run_config=RunConfig(name=f"trial-{info['number']}-{int(time.time())}",
                             storage_path=str(Path(context.study_dir).resolve() / RAY_DIR / "train"),
                             callbacks=[TuneReportCallback()]),
    )
    try:
        trainer.fit()
    except Exception as err:  # the workers failed: the trial fails with their reason
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        outcome = TrialOutcome(int(info["number"]), FAIL, error=f"distributed training failed: {reason}"[:2000])
        tune.report(final_payload(spec, outcome, 0))


# ----------------------------------------------------------------------------- driver side


def outcome_from_result(number: int, result: Mapping[str, Any] | None, *, early_stopping: Any) -> TrialOutcome:
    """The outcome a trial reported last. A trial that ended without its final report was
    stopped: by the early-stopping scheduler (PRUNED) or, without one, by an interruption of
    the search (FAIL, to be rerun)."""
    if result and result.get(FINAL_KEY) and result.get(OUTCOME_KEY):
        return TrialOutcome.from_dict(json.loads(result[OUTCOME_KEY]))
    epoch = int((result or {}).get("epoch") or 0)
    stopped = early_stopping.stopped_outcome(number, result) if early_stopping else None
    if stopped is not None:
        return stopped  # the rung engine's PRUNED: last values and the rung in the reason
    if early_stopping:
        return TrialOutcome(number, PRUNED, error=f"stopped by the scheduler after epoch {epoch}")
    return TrialOutcome(number, FAIL, error=INTERRUPTED)


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


class StudySearcher(OptunaSearch):
    """``OptunaSearch`` on the study's storage, which also decides how many trials to start and
    records outcomes with their reasons and metrics (see the module docstring)."""

    def __init__(self, handle: StudyHandle, monitor: SearchMonitor, *, parallel: bool, early_stopping: Any) -> None:
        spec = handle.spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().__init__(
                space=SpaceFunction(spec),
                metric=list(spec.metrics),
                mode=["max" if d == "maximize" else "min" for d in spec.directions],
                sampler=make_sampler(spec, parallel=parallel),
                study_name=spec.name,
                storage=handle.storage,
            )
        self.spec, self.monitor, self.early_stopping = spec, monitor, early_stopping
        retries_first(self._ot_study)
        self._failures = 0
        #: ``"PATH: cause"`` once a trial hit an infrastructure error: the search stops
        self.stop_reason: str | None = None
        self._live: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self._tune_trials: dict[str, Any] = {}  # Tune trial id -> Tune Trial (for error files)

    # the Optuna storage is the state: nothing to checkpoint in Tune, nothing to pickle
    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"study": self.spec.name, "state": "in the Optuna storage"}))

    def restore(self, checkpoint_path: str) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def _enough(self) -> bool:
        """The study (every driver's trials in the shared storage) has its trials, this run hit
        ``max_failures``, a grid has no point left, or the machine failed."""
        spec = self.spec
        if self.stop_reason is not None or self._failures >= spec.max_failures:
            return True
        counts = study_counts(self._ot_study)
        if counts.finished >= spec.n_trials:
            return True
        return spec.search.sampler == "grid" and counts.waiting <= 0

    def short_reason(self) -> str | None:
        """Why the search ended before ``n_trials`` (None when it did not)."""
        if self._failures >= self.spec.max_failures:
            return f"{self._failures} trials failed in this run (search.max_failures {self.spec.max_failures})"
        return None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._enough():
            return Searcher.FINISHED
        study, n_trials = self._ot_study, self.spec.n_trials
        if study_counts(study).finished + len(live_running(study)) >= n_trials:
            return None  # enough running (here or in another driver): another only if one fails
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # heartbeats outside Study.optimize are ours
            trial = study.ask()
            if claim_is_surplus(study, trial._trial_id, n_trials):
                give_back(study, trial._trial_id)  # another driver took the last place meanwhile
                return None
            trial.set_user_attr(DRIVER_ATTR, driver_id())
            self._ot_trials[trial_id] = trial
            config = super().suggest(trial_id)
        self._live[trial_id] = trial.number
        return config

    def interrupt_live(self, reason: str) -> list[int]:
        """Fail the trials still running with ``reason`` and queue their points again (the
        search is stopping); returns their numbers."""
        stopped = []
        for trial_id, number in list(self._live.items()):
            self._live.pop(trial_id, None)
            ot_trial = self._ot_trials[trial_id]
            frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
            if frozen.state != optuna.trial.TrialState.RUNNING:
                continue
            outcome = TrialOutcome(number, FAIL, error=reason)
            record_outcome(self._ot_study, ot_trial, outcome, self.spec)
            queue_again(self._ot_study, number, {**(frozen.system_attrs.get("fixed_params") or {}), **frozen.params})
            self.monitor.finished(outcome)
            stopped.append(number)
        return stopped

    def register(self, trial_id: str, tune_trial: Any) -> None:
        self._tune_trials[trial_id] = tune_trial
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            self.monitor.started(ot_trial.number, dict(tune_trial.config[TRIAL_KEY]["params"]), ot_trial._trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if result.get(FINAL_KEY) or trial_id not in self._ot_trials:
            return
        number = self._live.get(trial_id)
        if number is not None:
            self.monitor.epoch(number, {k: v for k, v in result.items() if k in _EPOCH_KEYS or ("." in k and "/" not in k)})
        metric = self.spec.metrics[0]
        if len(self.spec.metrics) == 1 and metric in EPOCH_METRICS and _finite(result.get(metric)):
            self._ot_trials[trial_id].report(float(result[metric]), int(result.get("epoch", 0)))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._live:
            return
        number = self._live.pop(trial_id)
        ot_trial = self._ot_trials[trial_id]
        if error:
            outcome = TrialOutcome(number, FAIL, error=_error_text(self._tune_trials.get(trial_id)))
        else:
            outcome = outcome_from_result(number, result, early_stopping=self.early_stopping)
        if outcome.stop is not None and self.stop_reason is None:
            self.stop_reason = outcome.stop  # DriverCallback stops the search at the next step
        try:
            record_outcome(self._ot_study, ot_trial, outcome, self.spec)
            if outcome.error == INTERRUPTED or outcome.stop is not None:
                frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
                queue_again(self._ot_study, number, {**(frozen.system_attrs.get("fixed_params") or {}),
                                                     **frozen.params})
        except Exception as err:  # never lose the Tune loop over one trial's bookkeeping
            log.warning("trial %d: could not record its outcome: %s: %s", number, type(err).__name__, err)
            outcome = TrialOutcome(number, FAIL, error=f"recording failed: {err}")
            try:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            except Exception:
                pass
        if outcome.state == FAIL and outcome.stop is None:
            self._failures += 1
        self.monitor.finished(outcome)


_EPOCH_KEYS = ("epoch", "step", "train_loss", "val_loss", "top1", "top5", "lr")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class SpaceFunction:
    """The define-by-run search space handed to ``OptunaSearch`` (a class so Tune can pickle it)."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        params = suggest_params(trial, self.spec)
        retry_of = trial.user_attrs.get(RETRY_ATTR)
        return {TRIAL_KEY: {"number": trial.number, "params": params, "retry_of": retry_of}}


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
    return tune.with_resources(tune.with_parameters(ray_trial, context=context), resources)


def _scheduler(spec: StudySpec, handle: StudyHandle) -> Any:
    """``search.early_stopping`` on Tune: the rung engine's scheduler (rung records in the study storage)."""
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
        searcher = StudySearcher(handle, monitor, parallel=ex.max_concurrent != 1, early_stopping=scheduler)
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
