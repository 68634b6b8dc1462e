"""The paper's study specs load and describe the paper's runs (validated only, nothing trains)."""
from __future__ import annotations

from pathlib import Path

import pytest

from svite_search.errors import UserInputError

from svite_search.search import load_spec
from svite_search.search.space import initial_queue, trial_config
from svite_search.report.paper import paper_results

STUDIES = Path(__file__).resolve().parents[2] / "studies"
PAPER_SPECS = sorted((STUDIES / "paper").glob("*.yaml"))


def _settings(spec) -> set[tuple]:
    """(method, density, head, mlp, patches kept) of every trial the study will run."""
    out = set()
    for params in initial_queue(spec)[: spec.n_trials]:
        cfg = trial_config(spec, params)
        tokens = cfg.tokens.keep_tokens if cfg.tokens.keep_tokens is not None else (
            None if cfg.tokens.keep_ratio >= 1.0 else cfg.tokens.keep_ratio)
        out.add((cfg.method, cfg.sparsity.density if cfg.method == "svite" else None,
                 cfg.sparsity.head_density if cfg.method == "s2vite" else None,
                 cfg.sparsity.mlp_density if cfg.method == "s2vite" else None, tokens))
    return out


def test_there_is_a_study_per_deit_model() -> None:
    assert [p.name for p in PAPER_SPECS] == ["deit-base.yaml", "deit-small.yaml", "deit-tiny.yaml"]


def test_paper_study_names_the_missing_imagenet(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="data.root"):
        load_spec(PAPER_SPECS[0])  # the placeholder path: refused before anything runs
    with pytest.raises(UserInputError):
        load_spec(PAPER_SPECS[0], overrides=[f"data.root={tmp_path}"])  # no train/<class>/ inside


@pytest.fixture
def imagenet_layout(tmp_path: Path) -> Path:
    """The folder layout the spec check looks for (ROOT/train/<class>/, ROOT/val/<class>/), no images."""
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
    return tmp_path / "imagenet"


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.stem)
def test_paper_study_runs_the_papers_grid_as_the_paper_did(path: Path, imagenet_layout: Path) -> None:
    spec = load_spec(path, overrides=[f"data.root={imagenet_layout}"])
    cfg = trial_config(spec, initial_queue(spec)[0])
    info = paper_results()["models"][cfg.model.name]
    assert cfg.data.dataset == "imagefolder" and cfg.data.root == str(imagenet_layout)
    assert cfg.train.epochs == 600 and cfg.train.lr_base_batch == 512 and cfg.train.warmup_epochs == 5
    assert (cfg.train.mixup, cfg.train.cutmix, cfg.train.label_smoothing, cfg.model.drop_path) == (0.8, 1.0, 0.1, 0.1)
    assert cfg.data.augment == "deit" and cfg.data.reprob == 0.25
    assert cfg.data.batch_size == info["batch_per_gpu"] and cfg.sparsity.update_interval == info["update_interval"]
    assert spec.executor.kind == "ray" and spec.executor.workers_per_trial == info["gpus"] == 8
    assert spec.executor.gpus_per_trial == 1

    grid = paper_results()["grid"]
    (head, mlp), = info["s2vite"]
    expected = {("dense", None, None, None, None)}
    expected |= {("svite", d, None, None, None) for d in grid["svite_densities"]}
    expected |= {("s2vite", None, head, mlp, None)}
    expected |= {("svite", grid["svite_plus_density"], None, None, k - 1) for k in grid["svite_plus_keep_tokens"]}
    assert _settings(spec) == expected
    assert spec.n_trials == len(initial_queue(spec)) == len(expected)


def test_toy_study_has_the_same_grid_shape_on_digits() -> None:
    spec = load_spec(STUDIES / "paper-digits.yaml")
    assert spec.base["data"]["dataset"] == "digits" and spec.base["model"]["name"] == "vit_digits"
    settings = _settings(spec)
    grid = paper_results()["grid"]
    pairs = {tuple(p) for m in paper_results()["models"].values() for p in m["s2vite"]}
    assert {("svite", d, None, None, None) for d in grid["svite_densities"]} <= settings
    assert {("s2vite", None, h, m, None) for h, m in pairs} <= settings
    assert ("dense", None, None, None, None) in settings
    # the paper's share of tokens, on 16 patches: 15, 14, 11, 8
    token_runs = sorted({round(s[4] * 16) for s in settings if s[4] is not None})
    assert token_runs == [8, 11, 14, 15]
    assert spec.n_trials == len(initial_queue(spec))
