"""What a Ray worker runs for one trial, and the reports it sends back to the driver.

A trial runs :func:`trial_function` in one of two places:

- as a Tune function trainable (one process per trial), or
- with ``executor.workers_per_trial > 1``, as the loop of every Ray Train worker of
  :func:`distributed_trial`: Ray Train's ``TorchTrainer`` inside the Tune trial, DDP over
  ``workers_per_trial`` workers (gloo on CPU); rank 0's reports reach Tune through
  ``TuneReportCallback``.

Either way the trial reports every epoch (:func:`epoch_payload`) and ends with one final
report carrying its whole outcome as JSON (:func:`final_payload`). The driver reads that last
report back with :func:`outcome_from_result`; a trial that ended without it was stopped (by
the early-stopping scheduler, or by the search stopping). Workers never write to the study:
the driver alone does.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune

from .objective import FAIL, PRUNED, TrialOutcome, run_trial
from .ray_session import RAY_DIR  # Ray's folder in the study directory (Tune's and Ray Train's results)
from .spec import StudySpec
from .study import INTERRUPTED

#: the Tune config entry with the study trial's number, parameters and the trial it reruns
TRIAL_KEY = "svite_trial"
#: the Ray Train loop config entry with the :class:`TrialContext` of a distributed trial
CONTEXT_KEY = "svite_context"
FINAL_KEY, OUTCOME_KEY = "svite_final", "svite_outcome"


@dataclass(frozen=True)
class TrialContext:
    """What every Ray trial needs besides its parameters (shipped once to the object store)."""

    spec: StudySpec
    study_dir: str


def trial_info(number: int, params: Mapping[str, Any], retry_of: int | None) -> dict[str, Any]:
    """The :data:`TRIAL_KEY` entry of a trial's Tune config."""
    return {"number": int(number), "params": dict(params), "retry_of": retry_of}


# ----------------------------------------------------------------------------- reports


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


def outcome_from_result(number: int, result: Mapping[str, Any] | None, *, early_stopping: Any) -> TrialOutcome:
    """The outcome a trial reported last. A trial that ended without its final report was
    stopped: by the early-stopping scheduler (PRUNED, with the epoch it reached) or, without
    one, by an interruption of the search (FAIL, to be rerun)."""
    if result and result.get(FINAL_KEY) and result.get(OUTCOME_KEY):
        return TrialOutcome.from_dict(json.loads(result[OUTCOME_KEY]))
    epoch = int((result or {}).get("epoch") or 0)
    stopped = early_stopping.stopped_outcome(number, result) if early_stopping else None
    if stopped is not None:
        return stopped  # the rung engine's PRUNED: last values and the rung in the reason
    if early_stopping:
        return TrialOutcome(number, PRUNED, error=f"stopped by the scheduler after epoch {epoch}")
    return TrialOutcome(number, FAIL, error=INTERRUPTED)


# ----------------------------------------------------------------------------- the trial


def _set_threads(spec: StudySpec) -> None:
    import torch

    torch.set_num_threads(max(1, int(round(spec.executor.cpus_per_trial))))


def trial_function(config: dict[str, Any], context: TrialContext | None = None) -> None:
    """Train one trial and report it.

    As a Tune function trainable, ``tune.with_parameters`` binds ``context`` and the reports go
    to Tune. As the loop of a Ray Train worker (:func:`distributed_trial`), the context comes in
    the loop config (Ray Train passes a loop exactly one argument) and the reports go to Ray
    Train; the trainer's DDP path sets up the process group from Ray Train's environment."""
    from .._torchvision_guard import ensure_torchvision

    ensure_torchvision()  # before timm (the trial imports it)
    report: Callable[[dict[str, Any]], None]
    if context is None:
        import ray.train

        context, report = config[CONTEXT_KEY], ray.train.report
    else:
        report = tune.report
    info = config[TRIAL_KEY]
    spec = context.spec
    _set_threads(spec)
    last_epoch = 0

    def on_epoch(metrics: dict[str, Any]) -> None:
        nonlocal last_epoch
        last_epoch = int(metrics.get("epoch", last_epoch))
        report(epoch_payload(spec, metrics))

    outcome = run_trial(spec, context.study_dir, int(info["number"]), info["params"], on_epoch=on_epoch,
                        retry_of=info.get("retry_of"))
    report(final_payload(spec, outcome, last_epoch))


def distributed_trial(config: dict[str, Any], context: TrialContext) -> None:
    """A Tune function trainable that trains one trial data-parallel on several workers with Ray
    Train's ``TorchTrainer``, each worker running :func:`trial_function` (the sparse engine
    keeps masks identical on every worker). Rank 0's reports reach Tune through
    ``TuneReportCallback``; a failure of the workers fails the trial with their reason."""
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
        trial_function,
        train_loop_config={TRIAL_KEY: info, CONTEXT_KEY: context},
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
