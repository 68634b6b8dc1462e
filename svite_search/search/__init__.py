"""The search harness: study specs, the Optuna study of a study directory, and its executors.

A study spec (YAML) is a run config whose values may be distributions, plus objectives,
constraints, sampler and executor settings (:mod:`.spec`). One trial is one training run through
the same code path as ``svite-search train`` (:mod:`.objective`). Trials run in this process
(:mod:`.local`) or on Ray Tune, driven by the same persistent Optuna study (:mod:`.ray_executor`);
the study lives in the study directory and resumes after any interruption (:mod:`.study`).

The search knows nothing of MLflow or the report: its tracker and report writer are injected
(:mod:`.hooks`); :func:`svite_search.harness.run_search` plugs them in, as the command line does.

Example::

    from svite_search.search import load_spec, run_search

    summary = run_search(load_spec("studies/quickstart.yaml"), "runs/quickstart")  # untracked, no report
    summary["pareto"]
"""
from .objective import TrialOutcome, run_trial
from .runner import format_summary, run_search
from .space import grid_points, suggest_params, trial_config
from .spec import Constraint, Distribution, Objective, StudySpec, load_spec, spec_from_dict
from .study import load_study, pareto_front, prepare_study, spec_of, study_counts

__all__ = [
    "Constraint",
    "Distribution",
    "Objective",
    "StudySpec",
    "TrialOutcome",
    "format_summary",
    "grid_points",
    "load_spec",
    "load_study",
    "pareto_front",
    "prepare_study",
    "run_search",
    "run_trial",
    "spec_from_dict",
    "spec_of",
    "study_counts",
    "suggest_params",
    "trial_config",
]
