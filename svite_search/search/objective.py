"""One trial: parameters -> run config -> training (the ``svite-search train`` code path) -> scores.

:func:`run_trial` never raises for a trial that goes wrong: an exception, a non-finite loss or
a non-finite objective comes back as a ``FAIL`` outcome with its reason, and a pruner's
:class:`optuna.TrialPruned` as ``PRUNED``, so the study records it and goes on. An error of the
machine (a full disk, a read-only path: :func:`.stop.infrastructure_error`) comes back as a
``FAIL`` whose ``stop`` names the path and the cause: the executor then stops the study and
queues the trial again instead of going on. Only ``KeyboardInterrupt``/``SystemExit`` pass
through. The outcome is plain data (JSON-ready) so a
Ray worker can send it back to the driver, which alone writes to the study.

Example::

    outcome = run_trial(spec, Path("runs/quickstart"), 3, {"method": "svite", "sparsity.density": 0.4})
    outcome.state, outcome.values, outcome.attrs["top1_best"]
"""
from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .space import trial_config
from .spec import StudySpec
from .._study_dir import RUN_CHECKPOINT, trial_dir
from .stop import infrastructure_error
from ..errors import first_line

log = logging.getLogger(__name__)

COMPLETE, FAIL, PRUNED = "COMPLETE", "FAIL", "PRUNED"

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrialOutcome:
    """What a trial produced. ``attrs`` become the Optuna trial's user attributes; ``result`` is
    the full training result (with its per-epoch ``history``) for the tracker."""

    number: int
    state: str  # COMPLETE | FAIL | PRUNED
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    result: dict[str, Any] | None = None
    #: set when the study must stop: ``"PATH: cause"`` of an infrastructure error
    stop: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialOutcome":
        return cls(**{k: data.get(k) for k in ("number", "state", "values", "error", "result", "stop")}, attrs=dict(data.get("attrs") or {}))


def _clean(value: Any) -> Any:
    """JSON-safe attribute value: non-finite floats become None, numpy scalars plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_attrs(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every scalar (and per-block list) of a training result, plus the per-epoch top-1 curve."""
    attrs: dict[str, Any] = {}
    for key, value in result.items():
        if key in ("history", "name"):
            continue
        if isinstance(value, (str, bool, int, float)) or value is None or hasattr(value, "item"):
            attrs[key] = _clean(value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            attrs[key] = _clean(list(value))
    history = result.get("history") or []
    attrs["top1_history"] = [_clean(epoch.get("top1")) for epoch in history]
    return attrs


def _adopt_checkpoint(study_dir: Path, retry_of: int | None, run_dir: Path) -> None:
    """A rerun of an interrupted trial continues from that trial's last checkpoint."""
    if retry_of is None:
        return
    source = trial_dir(study_dir, int(retry_of)) / RUN_CHECKPOINT
    target = run_dir / RUN_CHECKPOINT
    if source.is_file() and not target.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        log.info("trial resumes the checkpoint of interrupted trial %s", retry_of)


def measure_latency_ms(trainer: Any, spec: StudySpec) -> float:
    """Median milliseconds per forward pass of the trained model, as deployed: an S²ViTE model
    is physically slimmed first (masked heads and neurons would still cost time), and passes run
    under the run's autocast (bf16 or fp16 on a GPU), as a GPU would serve it."""
    from ..metrics.latency import measure_latency
    from ..models import model_input_size

    model = trainer.model
    if "s2vite" in trainer.components:
        from ..engine.structured import slim_model

        model = slim_model(model, trainer.components["s2vite"])
    settings = spec.search.latency
    result = measure_latency(
        model,
        model_input_size(model),
        batch_size=settings.batch_size,
        warmup=settings.warmup,
        repeats=settings.repeats,
        threads=settings.threads,
        amp=trainer.amp.dtype if trainer.amp.enabled else None,
    )
    return 1000.0 * result.median_s


def objective_values(spec: StudySpec, result: Mapping[str, Any]) -> list[float]:
    """The objective values of a result, in spec order; raises ValueError if one is missing or
    not finite (such a trial is recorded as failed)."""
    values = []
    for metric in spec.metrics:
        value = result.get(metric)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"objective {metric} is {value!r}")
        values.append(float(value))
    for constraint in spec.constraints:
        value = result.get(constraint.metric)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"constraint metric {constraint.metric} is {value!r}")
    return values


def _reason(err: BaseException) -> str:
    from ..train import NonFiniteLossError

    if isinstance(err, NonFiniteLossError):
        return f"non-finite loss: {err}"
    text = first_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_trial(
    spec: StudySpec,
    study_dir: str | Path,
    number: int,
    params: Mapping[str, Any],
    *,
    on_epoch: EpochCallback | None = None,
    retry_of: int | None = None,
    progress: bool | None = False,
) -> TrialOutcome:
    """Train trial ``number`` with ``params`` and score it (see the module docstring).

    ``on_epoch`` receives every epoch's metrics; raising :class:`optuna.TrialPruned` from it
    stops the trial as pruned. The run directory is ``<study_dir>/trials/<number>``.
    """
    import optuna

    from ..train import Trainer

    from .early_stopping.engine import trial_epochs, trial_rungs

    study_dir = Path(study_dir)
    run_dir = trial_dir(study_dir, number)
    attrs: dict[str, Any] = {"run_dir": str(run_dir)}
    epochs: list[dict[str, Any]] = []
    rungs = set(trial_rungs(spec, trial_epochs(spec, params), params))
    trainer: Any = None

    def report(metrics: dict[str, Any]) -> None:
        if not epochs and int(metrics.get("epoch", 0)) > 1:  # the first epoch after a resumed checkpoint
            attrs["resumed_at"] = int(metrics["epoch"]) - 1
        if int(metrics.get("epoch", 0)) in rungs and trainer is not None:
            metrics = {**metrics, **rung_structure(trainer)}  # what early stopping judges besides accuracy
        epochs.append(dict(metrics))
        if on_epoch is not None:
            on_epoch(metrics)

    try:
        cfg = trial_config(spec, params, name=f"{spec.name}-t{number}")
        _adopt_checkpoint(study_dir, retry_of, run_dir)
        trainer = Trainer(cfg, run_dir, progress=progress)
        result = trainer.fit(on_epoch=report)
        if spec.needs_latency:
            result["latency_ms"] = measure_latency_ms(trainer, spec)
        attrs.update(result_attrs(result))
        attrs["world_size"] = trainer.world
        values = objective_values(spec, result)
    except optuna.TrialPruned as err:
        attrs.update(stopped_attrs(epochs))
        reason = str(err) or f"pruned after epoch {len(epochs)}"
        return TrialOutcome(number, PRUNED, attrs=attrs, error=reason, result={"history": epochs})
    except Exception as err:  # a failed trial is data, not a crash of the study
        attrs["top1_history"] = [_clean(e.get("top1")) for e in epochs]
        infrastructure = infrastructure_error(err)
        if infrastructure is not None:  # the machine failed, not the trial: stop, rerun it later
            log.error("trial %d stopped by the machine: %s", number, infrastructure)
            return TrialOutcome(number, FAIL, attrs=attrs, error=f"infrastructure: {infrastructure} (rerun queued)",
                                result={"history": epochs}, stop=infrastructure)
        log.warning("trial %d failed: %s", number, _reason(err))
        return TrialOutcome(number, FAIL, attrs=attrs, error=_reason(err), result={"history": epochs})
    return TrialOutcome(number, COMPLETE, values=values, attrs=attrs, result=_jsonable(result))


def rung_structure(trainer: Any) -> dict[str, Any]:
    """MACs, parameters and density of the model as it stands (the objectives a rung knows
    besides accuracy): the same numbers the final result reports."""
    from ..train.summary import compute_summary

    summary = compute_summary(trainer.model, trainer.components, selects_tokens=trainer.selector is not None)
    return {k: summary[k] for k in ("gmacs", "dense_gmacs", "flops_savings", "params_nonzero", "density") if k in summary}


def stopped_attrs(epochs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The attributes of a trial stopped early: its last epoch's scalar metrics (its last
    values), the epochs it trained and its top-1 curve."""
    last = epochs[-1] if epochs else {}
    attrs = {k: _clean(v) for k, v in last.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")}
    attrs["epochs"] = int(last.get("epoch", len(epochs))) if last else 0
    attrs["top1_history"] = [_clean(e.get("top1")) for e in epochs]
    return attrs


def _jsonable(result: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key == "history":
            out[key] = [{k: _clean(v) for k, v in epoch.items()} for epoch in value]
        else:
            out[key] = _clean(value)
    return out
