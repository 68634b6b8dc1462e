"""Determinism: the same spec and seed, run by the local executor on the CPU in a fresh study
directory, gives the same trials: the same parameters, the same objective values and the same
per-epoch curves, to the last bit (so a study's numbers can be reproduced, and a resumed trial
can be compared with an uninterrupted one at all).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from svite_search.search.study import trial_attrs

from reliability_support import CRASH_SPEC, load_trials, result_of, run_cli


@pytest.mark.slow
def test_same_spec_and_seed_give_identical_trials(tmp_path: Path, new_study_dir, crash_spec_file: Path,
                                                   reference_study: Path) -> None:
    study = new_study_dir("again")
    done = run_cli("search", crash_spec_file, "--out", study, "--no-progress", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    ours, theirs = load_trials(study), load_trials(reference_study)
    assert len(ours) == len(theirs) == CRASH_SPEC["search"]["n_trials"]
    assert [result_of(t) for t in ours] == [result_of(t) for t in theirs]
    # the comparison has something to compare: the sampler did vary the parameters
    assert len({tuple(sorted(t.params.items())) for t in ours}) == len(ours)
    assert all(trial_attrs(t).get("top1_history") for t in ours)

    columns = ["number", "top1", "gmacs"]
    mine = pd.read_csv(study / "report" / "pareto.csv")[columns]
    reference = pd.read_csv(reference_study / "report" / "pareto.csv")[columns]
    pd.testing.assert_frame_equal(mine, reference)
