"""The Ray executor's searcher on a real persistent study, without running Ray trials, and the
public-API guarantees of the Ray modules.

The searcher is driven through Tune's ``Searcher`` calls (``suggest``, ``on_trial_result``,
``on_trial_complete``) with the payloads a trial reports, so each rule of the ask -> suggest ->
record path is checked in a second; ``test_ray.py`` runs the same searcher under Tune.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from _support.private_names import private_uses

pytest.importorskip("ray")

import ray  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

import svite_search.search.ray_executor as ray_executor  # noqa: E402
import svite_search.search.ray_session as ray_session  # noqa: E402
import svite_search.search.ray_trial as ray_trial  # noqa: E402
from svite_search.search import spec_from_dict  # noqa: E402
from svite_search.search.monitor import SearchMonitor  # noqa: E402
from svite_search.search.objective import COMPLETE, TrialOutcome  # noqa: E402
from svite_search.search.ray_executor import StudySearcher  # noqa: E402
from svite_search.search.study import trial_attrs  # noqa: E402
from svite_search.search.ray_trial import TRIAL_KEY, epoch_payload, final_payload  # noqa: E402
from svite_search.harness import make_tracker  # noqa: E402
from svite_search.search.study import prepare_study  # noqa: E402

RAY_MODULES = (ray_executor, ray_trial, ray_session)


# ----------------------------------------------------------------------------- public APIs only


@pytest.mark.parametrize("module", RAY_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_the_ray_modules_use_no_private_attributes(module: Any) -> None:
    assert private_uses(Path(module.__file__)) == []


def test_the_scan_finds_private_attributes(tmp_path: Path) -> None:
    """The scan itself: it sees each kind of private use it is meant to refuse."""
    probe = tmp_path / "probe.py"
    probe.write_text("from optuna.storages._heartbeat import is_heartbeat_enabled\n"
                     "def f(study, trial, searcher):\n"
                     "    ray.init(_temp_dir='/tmp/x')\n"
                     "    options = {'_system_config': {}}\n"
                     "    self._mine = 1\n"
                     "    return study._storage.get_trial(trial._trial_id), searcher._ot_trials, self._mine, self._ot_study\n")
    found = sorted(use.split(": ", 1)[1] for use in private_uses(probe))
    assert found == sorted(["from optuna.storages._heartbeat import", "keyword _temp_dir=", "'_system_config'",
                            "._storage of study", "._trial_id of trial", "._ot_trials of searcher",
                            "inherited ._ot_study"])


def test_the_searcher_is_a_plain_tune_searcher() -> None:
    bases = [cls.__module__ + "." + cls.__qualname__ for cls in StudySearcher.__mro__]
    assert bases == ["svite_search.search.ray_executor.StudySearcher", "ray.tune.search.searcher.Searcher",
                     "builtins.object"]
    assert not any("optuna" in name for module in RAY_MODULES for name in vars(module)
                   if name.endswith("Search"))


# ----------------------------------------------------------------------------- the one hidden option


def test_the_session_folder_keyword_is_given_only_to_the_tested_ray(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the installed Ray takes it, and still lists it among ray.init's options
    assert ray_session.session_folder_kwargs("/tmp/rayabc") == {"_temp_dir": "/tmp/rayabc"}
    assert "_temp_dir" in (ray.init.__doc__ or ""), "ray.init no longer documents _temp_dir"
    # another major release is refused in one line naming it, before anything is written
    for version in ("3.0.0", "1.13.0", "nightly"):
        with pytest.raises(RuntimeError, match=rf"^Ray {version}: .*executor.address") as caught:
            ray_session.session_folder_kwargs("/tmp/rayabc", version)
        assert "\n" not in str(caught.value)
    monkeypatch.setattr(ray, "__version__", "3.0.0")
    with pytest.raises(RuntimeError, match="^Ray 3.0.0: "):
        ray_session.start_local(tmp_path / "study", num_cpus=1)
    assert not (tmp_path / "study").exists()


# ----------------------------------------------------------------------------- the searcher


@pytest.fixture
def searcher_of(tmp_path: Path, tiny_spec: Any):
    """``searcher_of(early_stopping=False, **spec changes)``: a StudySearcher on a new study."""

    def make(*, early_stopping: bool = False, **changes: Any) -> StudySearcher:
        if early_stopping:  # the rung engine's Tune scheduler, asha on top-1
            changes["search"] = {**changes.get("search", {}), "early_stopping": {"kind": "asha", "min_epochs": 1,
                                                                                 "reduction_factor": 2}}
            changes.setdefault("train", {"epochs": 3, "max_steps_per_epoch": 2, "warmup_epochs": 0,
                                         "checkpoint": False})
        spec = spec_from_dict(tiny_spec(executor={"kind": "ray", "max_concurrent": 2}, **changes))
        handle = prepare_study(spec, tmp_path / "study", parallel=True)
        monitor = SearchMonitor(spec, handle.study, make_tracker(handle), live=False)
        return StudySearcher(handle, monitor, early_stopping=ray_executor._scheduler(spec, handle))

    return make


def _complete(searcher: StudySearcher, tune_id: str, config: dict[str, Any], top1: float = 50.0) -> None:
    info = config[TRIAL_KEY]
    spec = searcher.spec
    searcher.on_trial_result(tune_id, epoch_payload(spec, {"epoch": 1, "top1": top1 - 5}))
    outcome = TrialOutcome(info["number"], COMPLETE, values=[top1, 0.01], attrs={"top1": top1, "gmacs": 0.01})
    searcher.on_trial_complete(tune_id, final_payload(spec, outcome, 2))


def test_the_searcher_asks_suggests_and_records_each_trial(searcher_of: Any) -> None:
    searcher = searcher_of(search={"sampler": "tpe", "n_trials": 2, "seed": 0})
    study = searcher.study
    config = searcher.suggest("t-a")
    info = config[TRIAL_KEY]
    trial = study.get_trials()[0]
    assert trial.state == TrialState.RUNNING and trial.user_attrs["driver"]
    assert info == {"number": 0, "params": trial.params, "retry_of": None}
    assert {k: v for k, v in config.items() if k != TRIAL_KEY} == trial.params  # Tune's tables show them
    searcher.register("t-a", None)
    _complete(searcher, "t-a", config, top1=61.0)
    trial = study.get_trials()[0]
    assert trial.state == TrialState.COMPLETE and trial.values == [61.0, 0.01]
    assert trial_attrs(trial)["top1"] == 61.0


def test_the_searcher_waits_while_enough_run_and_finishes_at_n_trials(searcher_of: Any) -> None:
    searcher = searcher_of(search={"sampler": "random", "n_trials": 2, "seed": 0})
    first, second = searcher.suggest("t-a"), searcher.suggest("t-b")
    assert first[TRIAL_KEY]["number"] == 0 and second[TRIAL_KEY]["number"] == 1
    assert searcher.suggest("t-c") is None  # two running make n_trials: another only if one fails
    assert len(searcher.study.get_trials()) == 2
    _complete(searcher, "t-a", first)
    _complete(searcher, "t-b", second)
    assert searcher.suggest("t-c") == Searcher.FINISHED
    assert searcher.short_reason() is None


def test_a_trial_the_scheduler_stops_is_pruned_with_the_epoch_it_reached(searcher_of: Any) -> None:
    searcher = searcher_of(early_stopping=True, search={"sampler": "random", "n_trials": 2, "seed": 0})
    config = searcher.suggest("t-a")
    last = epoch_payload(searcher.spec, {"epoch": 1, "top1": 12.5})
    searcher.on_trial_result("t-a", last)
    searcher.on_trial_complete("t-a", last)  # Tune ends it on the scheduler's word: no final report
    trial = searcher.study.get_trials()[config[TRIAL_KEY]["number"]]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"] == "stopped by the scheduler after epoch 1"


def test_a_trial_stopped_without_a_scheduler_is_failed_and_rerun_first(searcher_of: Any) -> None:
    searcher = searcher_of(search={"sampler": "random", "n_trials": 2, "seed": 0})
    config = searcher.suggest("t-a")
    searcher.on_trial_complete("t-a", epoch_payload(searcher.spec, {"epoch": 1}))
    stopped = searcher.study.get_trials()[0]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith("interrupted")
    rerun = searcher.suggest("t-b")[TRIAL_KEY]
    assert rerun["retry_of"] == 0 and rerun["params"] == config[TRIAL_KEY]["params"]


def test_stopping_the_search_fails_and_requeues_the_running_trials(searcher_of: Any) -> None:
    searcher = searcher_of(search={"sampler": "random", "n_trials": 3, "seed": 0})
    done, running = searcher.suggest("t-a"), searcher.suggest("t-b")
    _complete(searcher, "t-a", done)
    assert searcher.interrupt_live("interrupted by SIGTERM (rerun queued)") == [1]
    trials = searcher.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"] == "interrupted by SIGTERM (rerun queued)"
    assert trials[2].user_attrs["retry_of"] == 1
    assert trials[2].system_attrs["fixed_params"] == running[TRIAL_KEY]["params"]
    searcher.on_trial_complete("t-b", None)  # Tune's late word on the stopped trial changes nothing
    assert searcher.study.get_trials()[1].state == TrialState.FAIL


# ----------------------------------------------------------------------------- early stopping


def test_the_scheduler_lets_a_trial_that_reaches_its_last_epoch_finish(searcher_of: Any) -> None:
    """The scheduler may stop a trial at a rung, never at its last epoch: a trial stopped there
    would lose the final report that carries its scores, and be PRUNED after a whole training."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    searcher = searcher_of(early_stopping=True, search={"sampler": "random", "n_trials": 1, "seed": 0})
    scheduler = searcher.early_stopping
    assert isinstance(scheduler, TrialScheduler)
    config = searcher.suggest("t-a")
    trial = Trial("trainable", config=config, stub=True)
    scheduler.on_trial_add(None, trial)
    decisions = [scheduler.on_trial_result(None, trial, {"epoch": epoch, "top1": 50.0}) for epoch in (1, 2, 3)]
    assert decisions == [TrialScheduler.CONTINUE] * 3
    no_stopping = spec_from_dict({**searcher.spec.raw, "search": {**searcher.spec.raw["search"], "early_stopping": {"kind": "none"}}})
    assert ray_executor._scheduler(no_stopping, None) is None
