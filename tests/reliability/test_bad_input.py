"""Bad input: every mistake gives exit code 2 and one line naming the field or the path, and
leaves the stores already on disk exactly as they were (every file's hash compared before and
after).

The table runs the command line's ``main`` in this process against a finished study directory
and a finished training run (both written by real processes); a few rows run again as real
processes to show the exit code a shell sees.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from reliability_support import CRASH_SPEC, TRAIN_CONFIG, run_cli, tree_digest, write_yaml
from svite_search.cli import main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

class Workspace:
    """The files a table row may refer to: the study and run on disk, spare paths."""

    def __init__(self, root: Path, study: Path, run: Path, slim: Path) -> None:
        self.root, self.study, self.run, self.slim = root, study, run, slim
        self.spec = write_yaml(root / "crash.yaml", CRASH_SPEC)
        self.config = write_yaml(root / "train.yaml", TRAIN_CONFIG)
        self.empty = root / "empty-data"
        self.empty.mkdir(exist_ok=True)
        (self.empty / "train").mkdir(exist_ok=True)
        self.missing = root / "no-such-data"
        self.a_file = root / "a-file"
        self.a_file.write_text("not a directory\n")
        self.read_only = root / "read-only"
        self.read_only.mkdir(exist_ok=True)
        self.read_only.chmod(0o555)

    def stores(self) -> dict[str, dict[str, str]]:
        return {"study": tree_digest(self.study), "run": tree_digest(self.run), "slim": tree_digest(self.slim.parent)}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, reference_study: Path) -> Workspace:
    """A finished study (a copy of the reference study), a finished S²ViTE training run and its
    slim export, all written by real processes."""
    import shutil

    root = tmp_path_factory.mktemp("bad-input")
    study = root / "study"
    shutil.copytree(reference_study, study)
    config = write_yaml(root / "train.yaml", TRAIN_CONFIG)
    run = root / "run"
    done = run_cli("train", config, "--out", run, "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    slim = root / "slim" / "model.pt"
    slim.parent.mkdir()
    done = run_cli("export-slim", run / "last.pt", "--out", slim, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return Workspace(root, study, run, slim)


def _search(*extra: Any) -> Callable[[Workspace], list[str]]:
    return lambda w: ["search", str(w.spec), "--out", str(w.study), "--no-progress", *map(str, extra)]


def _sets(*pairs: str) -> Callable[[Workspace], list[str]]:
    args: list[str] = []
    for pair in pairs:
        args += ["--set", pair]
    return _search(*args)


def _train(*extra: Any) -> Callable[[Workspace], list[str]]:
    return lambda w: ["train", str(w.config), "--out", str(w.run), "--no-progress", *map(str, extra)]


def _train_sets(*pairs: str) -> Callable[[Workspace], list[str]]:
    args: list[str] = []
    for pair in pairs:
        args += ["--set", pair]
    return _train(*args)


def _malformed(w: Workspace) -> Path:
    path = w.root / "malformed.yaml"
    path.write_text("name: crash\ntrain: {epochs: 2\nmethod: svite\n")
    return path


#: (id, argv builder, what the message must name: a string or a function of the workspace)
SEARCH_ROWS = [
    ("malformed_yaml", lambda w: ["search", str(_malformed(w)), "--out", str(w.study)], lambda w: "malformed.yaml"),
    ("missing_spec", lambda w: ["search", str(w.root / "nope.yaml"), "--out", str(w.study)], "nope.yaml"),
    ("unknown_top_key", _sets("trainer.epochs=2"), "trainer"),
    ("unknown_key", _sets("train.epochz=2"), "train.epochz"),
    ("wrong_type", _sets("train.epochs=two"), "train.epochs"),
    ("wrong_type_section", _sets("sparsity=0.5"), "sparsity"),
    ("density_zero", _sets("sparsity.density=0"), "sparsity.density"),
    ("density_negative", _sets("sparsity.density=-0.5"), "sparsity.density"),
    ("density_above_one", _sets("sparsity.density=1.5"), "sparsity.density"),
    ("density_range_high", _sets("sparsity.density.high=1.5"), "sparsity.density.high"),
    ("density_range_low", _sets("sparsity.density.low=0"), "sparsity.density.low"),
    ("keep_ratio_zero", _sets("tokens.keep_ratio=0"), "tokens.keep_ratio"),
    ("keep_ratio_above_one", _sets("tokens.keep_ratio=1.2"), "tokens.keep_ratio"),
    ("head_density_zero", _sets("sparsity.head_density=0"), "sparsity.head_density"),
    ("update_interval_zero", _sets("sparsity.update_interval=0"), "sparsity.update_interval"),
    ("update_interval_negative", _sets("sparsity.update_interval=-5"), "sparsity.update_interval"),
    ("epochs_zero", _sets("train.epochs=0"), "train.epochs"),
    ("epochs_negative", _sets("train.epochs=-1"), "train.epochs"),
    ("t_end_zero", _sets("sparsity.t_end=0"), "sparsity.t_end"),
    ("t_end_above_one", _sets("sparsity.t_end=1.5"), "sparsity.t_end"),
    ("unknown_method", _sets("method=svite3"), "method"),
    ("unknown_dataset", _sets("data.dataset=mnist"), "data.dataset"),
    ("unknown_sampler", _sets("search.sampler=bayes"), "search.sampler"),
    ("unknown_executor", _search("--executor", "slurm"), "--executor"),
    ("trials_zero", _search("--trials", "0"), "search.n_trials"),
    ("different_spec", _sets("search.seed=7"), lambda w: str(w.study)),
    pytest.param("unknown_model", _sets("model.name=vit_no_such_model"), "model.name"),
    pytest.param("missing_data_dir", lambda w: _sets("data.dataset=imagefolder", f"data.root={w.missing}")(w),
                 lambda w: str(w.missing)),
    pytest.param("empty_data_dir", lambda w: _sets("data.dataset=imagefolder", f"data.root={w.empty}")(w),
                 lambda w: str(w.empty)),
    pytest.param("out_under_a_file", lambda w: ["search", str(w.spec), "--out", str(w.a_file / "study")],
                 lambda w: str(w.a_file)),
    pytest.param("out_read_only", lambda w: ["search", str(w.spec), "--out", str(w.read_only / "study")],
                 lambda w: str(w.read_only),
                 marks=pytest.mark.skipif(IS_ROOT, reason="permissions do not bind root")),
]

TRAIN_ROWS = [
    ("malformed_yaml", lambda w: ["train", str(_malformed(w)), "--out", str(w.run)], "malformed.yaml"),
    ("unknown_key", _train_sets("sparsity.densty=0.5"), "sparsity.densty"),
    ("wrong_type", _train_sets("train.lr=fast"), "train.lr"),
    ("density_above_one", _train_sets("sparsity.density=1.01"), "sparsity.density"),
    ("keep_ratio_zero", _train_sets("tokens.keep_ratio=0"), "tokens.keep_ratio"),
    ("update_interval_zero", _train_sets("sparsity.update_interval=0"), "sparsity.update_interval"),
    ("epochs_zero", _train_sets("train.epochs=0"), "train.epochs"),
    ("t_end_above_one", _train_sets("sparsity.t_end=2"), "sparsity.t_end"),
    ("unknown_model", _train_sets("model.name=vit_no_such_model"), "model.name"),
    ("unknown_dataset", _train_sets("data.dataset=mnist"), "data.dataset"),
    ("unknown_method", _train_sets("method=rigl"), "method"),
    ("missing_data_dir", lambda w: _train_sets("data.dataset=imagefolder", f"data.root={w.missing}")(w),
     lambda w: str(w.missing)),
    ("empty_data_dir", lambda w: _train_sets("data.dataset=imagefolder", f"data.root={w.empty}")(w),
     lambda w: str(w.empty)),
    ("different_config", _train_sets("train.lr=0.5"), lambda w: str(w.run / "last.pt")),
    ("out_under_a_file", lambda w: ["train", str(w.config), "--out", str(w.a_file / "run")], lambda w: str(w.a_file)),
    pytest.param("out_read_only", lambda w: ["train", str(w.config), "--out", str(w.read_only / "run")],
                 lambda w: str(w.read_only), marks=pytest.mark.skipif(IS_ROOT, reason="permissions do not bind root")),
]


def _with_ids(rows: list[Any]) -> list[Any]:
    """Each row as a ``pytest.param`` named by its first value (its case)."""
    out = []
    for row in rows:
        values, marks = (row.values, row.marks) if hasattr(row, "marks") else (row, ())
        out.append(pytest.param(*values, marks=marks, id=values[0]))
    return out


def _run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    err = capsys.readouterr().err
    return int(code), [line for line in err.splitlines() if line.strip()]


def _check_refused(ws: Workspace, argv: list[str], names: Any, capsys: pytest.CaptureFixture,
                   also: Path | None = None) -> None:
    """Exit code 2, one line naming ``names``, and the stores (and ``also``) unchanged."""
    before = ws.stores(), tree_digest(also) if also else None
    code, lines = _run_main(argv, capsys)
    named = names(ws) if callable(names) else names
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"svite-search {argv[0]}: error:") and named in lines[0], lines[0]
    assert (ws.stores(), tree_digest(also) if also else None) == before, "a refused command changed files on disk"


@pytest.mark.parametrize("case, argv, names", _with_ids(SEARCH_ROWS))
def test_search_refuses_bad_input(ws: Workspace, case: str, argv: Callable, names: Any, capsys) -> None:
    _check_refused(ws, argv(ws), names, capsys)


@pytest.mark.parametrize("case, argv, names", _with_ids(TRAIN_ROWS))
def test_train_refuses_bad_input(ws: Workspace, case: str, argv: Callable, names: Any, capsys) -> None:
    _check_refused(ws, argv(ws), names, capsys)


def _damaged_copy(ws: Workspace, how: str) -> Path:
    """A copy of the run's checkpoint, damaged: cut in half, or with its middle overwritten."""
    data = (ws.run / "last.pt").read_bytes()
    target = ws.root / f"damaged-{how}" / "last.pt"
    target.parent.mkdir(exist_ok=True)
    if how == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif how == "corrupted":
        middle = len(data) // 2
        target.write_bytes(data[:middle - 4096] + os.urandom(8192) + data[middle + 4096:])
    else:
        target.write_bytes(b"")
    return target


@pytest.mark.parametrize("how", ["truncated", "corrupted", "empty"])
def test_a_damaged_checkpoint_is_refused_by_train_and_export(ws: Workspace, how: str, capsys) -> None:
    damaged = _damaged_copy(ws, how)
    run_dir = damaged.parent
    (run_dir / "config.yaml").write_text((ws.run / "config.yaml").read_text())
    # train resumes from --out/last.pt: refused, not resumed from damaged weights
    _check_refused(ws, ["train", str(ws.config), "--out", str(run_dir), "--no-progress"], str(damaged), capsys,
                   also=run_dir)
    # export-slim reads it; the slim file already there stays as it was
    _check_refused(ws, ["export-slim", str(damaged), "--out", str(ws.slim)], str(damaged), capsys, also=run_dir)


def test_export_slim_refuses_what_it_cannot_slim(ws: Workspace, capsys) -> None:
    _check_refused(ws, ["export-slim", str(ws.root / "nope.pt"), "--out", str(ws.slim)], "nope.pt", capsys)
    _check_refused(ws, ["export-slim", str(ws.run / "last.pt"), "--out", str(ws.slim.parent)], str(ws.slim.parent), capsys)
    _check_refused(ws, ["export-slim", str(ws.run / "last.pt"), "--out", str(ws.slim), "--ema"], "EMA", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["different_spec", "damaged_checkpoint"])
def test_a_real_process_exits_2_with_one_line(ws: Workspace, case: str) -> None:
    if case == "malformed_yaml":
        argv, named = ["search", _malformed(ws), "--out", ws.study], "malformed.yaml"
    elif case == "different_spec":
        argv, named = ["search", ws.spec, "--out", ws.study, "--set", "train.epochs=9"], str(ws.study)
    else:
        damaged = _damaged_copy(ws, "truncated")
        argv, named = ["export-slim", damaged, "--out", ws.slim], str(damaged)
    before = ws.stores()
    done = run_cli(*argv, cwd=ws.root)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and named in lines[0], done.stderr
    assert done.stdout == ""
    assert ws.stores() == before


# ----------------------------------------------------------------------------- hostile input, real processes

#: A YAML alias bomb of 300 bytes: seven levels of nine aliases, 9**7 (4.8 million) values once expanded.
BOMB = "name: crash\ntrain:\n  epochs: [&a [lol, lol, lol, lol, lol, lol, lol, lol, lol], " + ", ".join(
    f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg")) + "]\n"


def _spec_file(w: Workspace, name: str, text: str | bytes) -> Path:
    path = w.root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _grid_spec(w: Workspace) -> Path:
    import yaml

    spec = {**CRASH_SPEC, "search": {"sampler": "grid", "seed": 0},
            "sparsity": {"density": {"low": 0.2, "high": 0.8, "step": 1e-12}, "update_interval": 2}}
    return _spec_file(w, "grid.yaml", yaml.safe_dump(spec))


def _damaged_study(w: Workspace, case: str, file: str, content: bytes | None) -> Path:
    """A copy of the study with ``file`` replaced by ``content`` (or cut to a quarter)."""
    import shutil

    study = w.root / f"damaged-{case}"
    if not study.exists():
        shutil.copytree(w.study, study)
        target = study / file
        target.write_bytes(content if content is not None else target.read_bytes()[: target.stat().st_size // 4])
    return study


def _new(w: Workspace, case: str) -> Path:
    return w.root / f"new-{case}"


#: (id, argv builder, what the one line names, the directory that must not exist afterwards or
#: whose files must stay as they were)
HOSTILE_ROWS = [
    ("non_utf8_spec",
     lambda w, c: ["search", _spec_file(w, "latin1.yaml", b"name: crash\nmethod: svite  # caf\xe9\n"), "--out", _new(w, c)],
     lambda w: str(w.root / "latin1.yaml")),
    ("yaml_alias_bomb", lambda w, c: ["search", _spec_file(w, "bomb.yaml", BOMB), "--out", _new(w, c)],
     lambda w: "bomb.yaml"),
    ("grid_explodes", lambda w, c: ["search", _grid_spec(w), "--out", _new(w, c)], "sparsity.density.step"),
    ("lr_infinite", lambda w, c: ["search", w.spec, "--out", _new(w, c), "--set", "train.lr={low: 1.0e-3, high: .inf}"],
     "train.lr.high"),
    ("seed_negative", lambda w, c: ["search", w.spec, "--out", _new(w, c), "--set", "search.seed=-1"], "search.seed"),
    ("seed_huge", lambda w, c: ["search", w.spec, "--out", _new(w, c), "--set", "search.seed=1.0e+30"], "search.seed"),
    ("epochs_huge", lambda w, c: ["search", w.spec, "--out", _new(w, c), "--set", "train.epochs=1.0e+308"],
     "train.epochs"),
    ("train_epochs_huge", lambda w, c: ["train", w.config, "--out", _new(w, c), "--set", "train.epochs=1.0e+308"],
     "train.epochs"),
    ("update_interval_huge", lambda w, c: ["search", w.spec, "--out", _new(w, c), "--set",
                                           "sparsity.update_interval={low: 1, high: 1.0e+300}"],
     "sparsity.update_interval.high"),
    ("duplicate_key",
     lambda w, c: ["search", _spec_file(w, "dup.yaml", "name: crash\ntrain: {epochs: 2}\nmethod: svite\ntrain:\n  lr: 0.1\n"),
                   "--out", _new(w, c)],
     "duplicate key train (line 4"),
    ("duplicate_nested_key",
     lambda w, c: ["train", _spec_file(w, "dup2.yaml", "name: x\ntrain:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n"),
                   "--out", _new(w, c)],
     "duplicate key train.epochs (line 5"),
    ("garbage_study_json", lambda w, c: ["search", w.spec, "--out", _damaged_study(w, c, "study.json", b"{not json")],
     "study.json"),
    ("garbage_study_json_report", lambda w, c: ["report", _damaged_study(w, c, "study.json", b"\x00\xff garbage")],
     "study.json"),
    ("garbage_spec_yaml", lambda w, c: ["search", w.spec, "--out", _damaged_study(w, c, "spec.yaml", b"spec: [unclosed\n")],
     "spec.yaml"),
    ("garbage_spec_yaml_report", lambda w, c: ["report", _damaged_study(w, c, "spec.yaml", b"- just\n- a list\n")],
     "spec.yaml"),
    ("truncated_mlflow_db", lambda w, c: ["search", w.spec, "--out", _damaged_study(w, c, "mlflow.db", None)],
     "mlflow.db"),
    ("truncated_optuna_db_report", lambda w, c: ["report", _damaged_study(w, c, "optuna.db", None)], "optuna.db"),
    ("report_out_a_file", lambda w, c: ["report", w.study, "--out", w.a_file], lambda w: str(w.a_file)),
    ("report_out_under_a_file", lambda w, c: ["report", w.study, "--out", w.a_file / "report"], lambda w: str(w.a_file)),
    ("report_out_proc", lambda w, c: ["report", w.study, "--out", "/proc/svite-report"], "/proc"),
    ("export_out_under_a_file", lambda w, c: ["export-slim", w.run / "last.pt", "--out", w.a_file / "slim.pt"],
     lambda w: str(w.a_file)),
    ("export_out_proc", lambda w, c: ["export-slim", w.run / "last.pt", "--out", "/proc/svite-slim.pt"], "/proc"),
]


def _refuses_hostile(ws: Workspace, case: str, args: list[str], names: Any, code_and_lines: Callable) -> None:
    """Exit 2, one short line naming the field or path, nothing written: the stores, the damaged
    copy (when the row made one) and no new output directory."""
    damaged = ws.root / f"damaged-{case}"
    before = ws.stores(), tree_digest(damaged)
    code, lines = code_and_lines(args)
    named = names(ws) if callable(names) else names
    assert code == 2, lines[-5:]
    assert len(lines) == 1 and len(lines[0]) < 500, lines[:3]
    assert lines[0].startswith(f"svite-search {args[0]}: error:") and named in lines[0], lines[0]
    assert (ws.stores(), tree_digest(damaged)) == before, "a refused command changed files on disk"
    assert not _new(ws, case).exists(), "a refused command created its output directory"


@pytest.mark.parametrize("case, argv, names", _with_ids(HOSTILE_ROWS))
def test_hostile_input_is_refused(ws: Workspace, case: str, argv: Callable, names: Any, capsys) -> None:
    _refuses_hostile(ws, case, [str(a) for a in argv(ws, case)], names, lambda args: _run_main(args, capsys))


#: Rows run again as real processes: what a shell sees, stdout included.
REAL_PROCESS_ROWS = ("non_utf8_spec", "yaml_alias_bomb", "lr_infinite", "truncated_mlflow_db", "export_out_proc")


@pytest.mark.parametrize("case, argv, names", _with_ids([r for r in HOSTILE_ROWS if r[0] in REAL_PROCESS_ROWS]))
def test_a_real_process_refuses_hostile_input(ws: Workspace, case: str, argv: Callable, names: Any) -> None:
    """The same as a real process (on this machine the refusal comes back in about the time
    ``import svite_search`` takes; not timed here), with nothing on stdout."""

    def run(args: list[str]) -> tuple[int, list[str]]:
        done = run_cli(*args, cwd=ws.root)
        assert done.stdout == ""
        return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]

    _refuses_hostile(ws, case, [str(a) for a in argv(ws, case)], names, run)
