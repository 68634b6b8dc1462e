"""Early stopping on Ray Tune: a ``TrialScheduler`` that asks the rung engine.

Tune's own schedulers rank one metric and keep their rungs in the driver's memory; this one
judges each reported epoch with :class:`.engine.RungEngine`, whose rung records live in the
Optuna storage, so it ranks every objective (``pareto``), handles any number of trials running
at once and arriving at a rung in any order (each arrival is compared with whoever was recorded
there before it), and a restarted driver goes on with the same records. It never pauses a trial
(asynchronous successive halving promotes by letting a trial run on), so it extends
``FIFOScheduler``: first in, first out, and STOP where the engine says so.
"""
from __future__ import annotations

import json
from typing import Any

from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..objective import PRUNED, TrialOutcome, stopped_attrs
from ..spec import StudySpec
from .engine import RungEngine


class RungScheduler(FIFOScheduler):
    """STOP or CONTINUE on every epoch a trial reports (see the module docstring).

    ``trial_key`` is the Tune config entry holding the Optuna trial's ``number`` and ``params``;
    results with ``final_key`` set are a trial's last report and are not judged.
    """

    def __init__(self, spec: StudySpec, storage: Any, *, trial_key: str, final_key: str) -> None:
        super().__init__()
        self.engine = RungEngine.for_study(spec, storage)
        self.storage = storage
        self.trial_key, self.final_key = trial_key, final_key
        self._epochs: dict[int, list[dict[str, Any]]] = {}  # Optuna trial number -> epochs seen
        self._stopped: dict[int, str] = {}  # Optuna trial number -> why it was stopped

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        info = (trial.config or {}).get(self.trial_key)
        if not info or result.get(self.final_key) or "epoch" not in result:
            return TrialScheduler.CONTINUE
        number = int(info["number"])
        metrics = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in AUTO_RESULT_KEYS and k != "trial_id"}
        seen = self._epochs.setdefault(number, [])
        if not seen or int(seen[-1].get("epoch", 0)) < int(metrics["epoch"]):
            seen.append(metrics)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.engine.study_id, number)
        verdict = self.engine.judge(number, trial_id, int(metrics["epoch"]), dict(info.get("params") or {}), metrics,
                                    [e.get("top1") for e in seen])
        if verdict.go_on:
            return TrialScheduler.CONTINUE
        self._stopped[number] = verdict.reason
        return TrialScheduler.STOP

    def stopped_outcome(self, number: int, result: dict[str, Any] | None) -> TrialOutcome | None:
        """The PRUNED outcome of a trial this scheduler stopped (its last values as attributes,
        the rung and the rule's verdict as the reason); None for any other trial."""
        reason = self._stopped.pop(number, None)
        if reason is None:
            return None
        epochs = self._epochs.pop(number, [])
        history = [{k: v for k, v in e.items() if isinstance(k, str) and "/" not in k} for e in epochs]
        return TrialOutcome(number, PRUNED, attrs=stopped_attrs(history), error=reason,
                            result={"history": json.loads(json.dumps(history, default=float))})

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._forget(trial)

    def _forget(self, trial: Any) -> None:
        info = (trial.config or {}).get(self.trial_key) or {}
        number = info.get("number")
        if number is not None and int(number) not in self._stopped:
            self._epochs.pop(int(number), None)
