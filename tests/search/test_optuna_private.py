"""The two Optuna internals the study package needs (:mod:`svite_search.search.study._optuna_private`):
each still exists in the installed Optuna with the shape the harness uses, an Optuna outside the
tested versions is warned about, a missing one falls back to Optuna's own behaviour, and no other
module of the search layer names an Optuna or Ray internal."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import optuna
import pytest

import svite_search.search as search_package
from _support.private_names import private_uses
from svite_search.search.study import TESTED_OPTUNA, open_storage
from svite_search.search.study import _optuna_private as internals

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

OWNER = Path(internals.__file__)
SEARCH_MODULES = sorted(p for p in Path(search_package.__file__).parent.rglob("*.py") if p != OWNER)


def test_the_installed_optuna_is_a_tested_version() -> None:
    low, high = TESTED_OPTUNA
    assert low <= internals.optuna_version() < high, optuna.__version__
    assert internals.version_tested()


def test_the_waiting_trial_pop_still_exists_and_takes_no_arguments() -> None:
    pop = optuna.Study._pop_waiting_trial_id
    assert list(inspect.signature(pop).parameters) == ["self"]
    assert "self._pop_waiting_trial_id()" in inspect.getsource(optuna.Study)  # what ask() calls


def test_stale_trial_ids_still_exist_on_the_rdb_storage(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert list(inspect.signature(storage._get_stale_trial_ids).parameters) == ["study_id"]
    study = optuna.create_study(storage=storage, study_name="s")
    study_id = storage.get_study_id_from_name("s")
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.record_heartbeat(trial_id)
    assert internals.stale_trial_ids(storage, study_id) == []  # it beat a moment ago


def test_an_untested_optuna_is_warned_about_once(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(optuna, "__version__", "9.1.0")
    monkeypatch.setattr(internals, "_warned", [])
    with caplog.at_level(logging.WARNING, logger=internals.__name__):
        assert not internals.version_tested()
        assert not internals.version_tested()
    assert len([r for r in caplog.records if "9.1.0" in r.getMessage()]) == 1


def test_an_optuna_without_the_internals_falls_back_to_its_own_behaviour() -> None:
    class NoHooks:  # an Optuna whose Study and storage lost the internals
        def get_heartbeat_interval(self) -> int:
            return 30

    assert internals.replace_waiting_trial_pop(NoHooks(), lambda: None) is False  # type: ignore[arg-type]
    assert internals.stale_trial_ids(NoHooks(), 1) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("path", SEARCH_MODULES, ids=lambda p: str(p.relative_to(OWNER.parents[2])))
def test_no_other_search_module_names_an_optuna_or_ray_internal(path: Path) -> None:
    assert private_uses(path) == []


def test_the_owner_is_the_one_module_the_scan_finds_internals_in() -> None:
    found: list[Any] = private_uses(OWNER)
    assert any("_pop_waiting_trial_id" in use for use in found) and any("_get_stale_trial_ids" in use for use in found)
