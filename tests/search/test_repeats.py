"""``search.repeats: skip``: a trial asked for a setting the study trained already, or trains now,
is recorded PRUNED untrained with ``repeat_of``, not counted towards ``n_trials``, gets no MLflow
run, and the run ends (exit 0) once the sampler asks only for spent settings.

The space here has two settings (density 0.3 or 0.6 under SViTE), so a sampler asks for spent
ones at once: the Ray searcher's rules run in a second without Ray trials, and one local study
trains the two settings for real.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from svite_search.errors import ConfigError
from svite_search.harness import make_tracker, run_search
from svite_search.report._frame import trials_frame
from svite_search.report.compute import compute_spent
from svite_search.report.status import format_status, study_status
from svite_search.search import load_study, spec_from_dict
from svite_search.search.monitor import SearchMonitor
from svite_search.search.study import (REPEAT_ATTR, SpentSpace, claim_is_surplus, is_skipped_repeat, prepare_study,
                                       study_counts)


def _two_settings(tiny_spec: Any, **search: Any) -> dict[str, Any]:
    return tiny_spec(method="svite", sparsity={"density": {"choices": [0.3, 0.6]}, "update_interval": 2},
                     tokens=None, search={"sampler": "random", "n_trials": 4, "seed": 0, "repeats": "skip",
                                          "max_repeats_in_a_row": 4, **search})


def test_the_setting_is_validated_and_does_not_change_the_study_identity(tiny_spec: Any) -> None:
    with pytest.raises(ConfigError, match="^search.repeats: 'sometimes' is not one of train, skip"):
        spec_from_dict(_two_settings(tiny_spec, repeats="sometimes"))
    with pytest.raises(ConfigError, match="^search.max_repeats_in_a_row"):
        spec_from_dict(_two_settings(tiny_spec, max_repeats_in_a_row=0))
    skip, train = spec_from_dict(_two_settings(tiny_spec)), spec_from_dict(_two_settings(tiny_spec, repeats="train"))
    assert skip.search.repeats == "skip" and train.search.repeats == "train"
    assert skip.spec_hash == train.spec_hash  # a study may be resumed with the other policy


def _searcher(tmp_path: Path, spec_dict: dict[str, Any]) -> Any:
    pytest.importorskip("ray")
    from svite_search.search.ray_executor import StudySearcher

    spec = spec_from_dict({**spec_dict, "executor": {"kind": "ray", "max_concurrent": 2}})
    handle = prepare_study(spec, tmp_path / "study", parallel=True)
    monitor = SearchMonitor(spec, handle.study, make_tracker(handle), live=False)
    return StudySearcher(handle, monitor, early_stopping=None)


def _complete(searcher: Any, tune_id: str, config: dict[str, Any]) -> None:
    from svite_search.search.objective import COMPLETE, TrialOutcome
    from svite_search.search.ray_trial import TRIAL_KEY, epoch_payload, final_payload

    number = config[TRIAL_KEY]["number"]
    searcher.on_trial_result(tune_id, epoch_payload(searcher.spec, {"epoch": 1, "top1": 40.0}))
    outcome = TrialOutcome(number, COMPLETE, values=[50.0, 0.01], attrs={"top1": 50.0, "gmacs": 0.01})
    searcher.on_trial_complete(tune_id, final_payload(searcher.spec, outcome, 2))


def test_the_ray_searcher_skips_running_and_trained_twins_and_ends_when_the_space_is_spent(
        tmp_path: Path, tiny_spec: Any) -> None:
    from ray.tune.search import Searcher

    from svite_search.search.ray_trial import TRIAL_KEY

    searcher = _searcher(tmp_path, _two_settings(tiny_spec))
    study = searcher.study
    first, second = searcher.suggest("t-a"), searcher.suggest("t-b")
    assert first[TRIAL_KEY]["params"] != second[TRIAL_KEY]["params"]  # the running twin was skipped
    trials = study.get_trials()
    skipped = [t for t in trials if is_skipped_repeat(t)]
    for t in skipped:  # each one names the trial that holds its setting, which is not itself a repeat
        twin = trials[t.user_attrs[REPEAT_ATTR]]
        assert t.params == twin.params and twin.state == TrialState.RUNNING and not twin.user_attrs.get(REPEAT_ATTR)
        assert t.user_attrs["pruned_reason"].startswith(f"repeat of trial {twin.number}: ")
    counts = study_counts(study)
    assert counts.pruned == counts.repeats == len(skipped) and counts.finished == 0
    _complete(searcher, "t-a", first)
    _complete(searcher, "t-b", second)
    assert study_counts(study).finished == 2  # the repeats do not count towards n_trials (4)
    assert searcher.suggest("t-c") == Searcher.FINISHED  # both settings trained: every ask is a repeat
    reason = searcher.short_reason()
    assert isinstance(reason, SpentSpace) and reason.startswith("the sampler asked for 4 settings in a row")
    counts = study_counts(study)
    assert counts.complete == 2 and counts.running == 0 and counts.repeats == len(skipped) + 4
    assert searcher.suggest("t-d") == Searcher.FINISHED


def test_a_skipped_repeat_does_not_make_a_claim_surplus(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(_two_settings(tiny_spec, n_trials=1))
    study = prepare_study(spec, tmp_path / "study").study
    repeat = study.ask()
    repeat.set_user_attr(REPEAT_ATTR, 7)
    study.tell(repeat, state=TrialState.PRUNED)
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)  # stopped at a rung: it counts
    assert claim_is_surplus(study, study.ask().number, 2) is False  # 1 counted + this one = 2
    assert claim_is_surplus(study, study.ask().number, 2) is True


def test_train_keeps_training_repeats(tmp_path: Path, tiny_spec: Any) -> None:
    """The default, for contrast: the same seeded sampler on the same space trains a repeat."""
    from svite_search.search.ray_trial import TRIAL_KEY

    searcher = _searcher(tmp_path, _two_settings(tiny_spec, repeats="train"))
    configs = [searcher.suggest(f"t-{i}") for i in range(2)]
    for i, config in enumerate(configs):
        _complete(searcher, f"t-{i}", config)
    configs = [searcher.suggest(f"t-{i}") for i in range(2, 4)]
    assert all(isinstance(c, dict) for c in configs)  # four trials on a space of two settings
    assert study_counts(searcher.study).repeats == 0


@pytest.mark.slow
def test_a_local_study_trains_each_setting_once_and_reports_the_skipped_repeats_apart(
        tmp_path: Path, tiny_spec: Any) -> None:
    from mlflow.tracking import MlflowClient

    spec = spec_from_dict(_two_settings(tiny_spec, max_repeats_in_a_row=3, n_trials=3) | {"tracking": {"enabled": True}})
    out = tmp_path / "study"
    summary = run_search(spec, out, live=False)
    study = load_study(out)
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["sparsity.density"] for t in trained) == [0.3, 0.6]
    assert summary["trials_complete"] == 2 and summary["trials_pruned"] == 0
    repeats = summary["trials_repeated"]
    assert repeats >= 3 and summary["spent"].startswith("the sampler asked for 3 settings in a row")
    assert all(is_skipped_repeat(t) for t in study.trials[-3:])  # the run ended on three in a row
    assert "stopped" not in summary
    for t in study.trials:
        if is_skipped_repeat(t):
            assert not (out / "trials" / str(t.number)).exists()  # nothing trained, nothing written

    status = study_status(out)
    assert status["counts"]["repeats"] == status["counts"]["pruned"] == repeats and status["counts"]["finished"] == 2
    assert f"2/3 finished: 2 complete, 0 pruned, {repeats} repeats skipped, 0 failed" in format_status(status)
    frame = trials_frame(study.trials, [], default_method="svite")
    spent = compute_spent(frame)
    assert spent["by_state"]["REPEAT"] == {"trials": repeats, "trial_epochs": 0.0, "trial_hours": 0.0}
    assert "PRUNED" not in spent["by_state"] and spent["trial_epochs"] == 4.0  # two trials of 2 epochs
    summary_md = (Path(summary["report_dir"]) / "summary.md").read_text()
    assert f"{repeats} repeats skipped untrained" in summary_md

    # a second run on the spent study asks again, skips again and ends the same way: nothing trains
    before = len(study.trials)
    again = run_search(spec, out, live=False)
    assert again["trials_complete"] == 2 and again["spent"] and len(load_study(out).trials) == before + 3

    # MLflow: a run per trained trial only, also after the second run's back-fill of finished trials
    client = MlflowClient(again["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.`svite.kind` = 'trial'")
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == sorted(t.number for t in trained)


@pytest.mark.slow
def test_a_ray_study_trains_each_setting_once_and_ends_when_the_space_is_spent(
        ray_session: None, tmp_path: Path, tiny_spec: Any) -> None:
    pytest.importorskip("ray")
    spec = spec_from_dict(_two_settings(tiny_spec, max_repeats_in_a_row=3, n_trials=3)
                          | {"executor": {"kind": "ray", "cpus_per_trial": 1, "max_concurrent": 2}})
    summary = run_search(spec, tmp_path / "study", live=False)
    trials = load_study(tmp_path / "study").trials
    trained = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["sparsity.density"] for t in trained) == [0.3, 0.6]
    assert all(t.state == TrialState.COMPLETE or is_skipped_repeat(t) for t in trials)
    assert summary["trials_complete"] == 2 and summary["trials_repeated"] == len(trials) - 2 >= 3
    assert summary["spent"].startswith("the sampler asked for 3 settings in a row") and "stopped" not in summary
