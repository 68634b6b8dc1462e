"""Atomic writes: checkpoints, exported slim models and reports are written to a temporary
file and renamed, so a process killed in the middle of a write leaves the previous file whole.

Two kinds of evidence:

* a real process that rewrites a checkpoint and a slim model in a tight loop is SIGKILLed at
  random moments; each time, both files still load (through the same safe loaders the
  commands use) and hold a complete earlier version;
* for every file a command writes, a second write must replace the file (a new inode) rather
  than rewrite it in place: a reader holding the old file keeps the old, whole content. That is
  what makes a kill harmless, and it can be checked without luck in the timing.

A normal write leaves no temporary file behind, and clears the ones killed writes left.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from reliability_support import CRASH_SPEC, TRAIN_CONFIG, cli_env, write_yaml

#: Rewrites DIR/last.pt (the trainer's atomic save) and DIR/slim.pt (save_slim) forever,
#: printing the version just written; version v's checkpoint holds v in every tensor.
WRITER = r"""
import sys
from pathlib import Path
import svite_search.models  # the torchvision import guard, before timm
import timm, torch
from svite_search.engine.structured import save_slim
from svite_search.train.checkpoint import atomic_torch_save

out = Path(sys.argv[1])
model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=192, depth=4, num_heads=3,
                          num_classes=10)
version = 0
while True:
    version += 1
    state = {"version": version, "model": {k: torch.full_like(v, float(version)) for k, v in model.state_dict().items()}}
    atomic_torch_save(state, out / "last.pt")
    with torch.no_grad():
        model.head.bias.fill_(float(version))
    save_slim(model, out / "slim.pt", verify=False)
    print(version, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_writes_leaves_the_previous_files_whole(tmp_path: Path) -> None:
    from svite_search.engine.structured import load_slim, save_slim
    from svite_search.train.checkpoint import atomic_torch_save, load_checkpoint

    rng = random.Random(0)
    last_seen = 0
    for round_ in range(3):
        log = tmp_path / f"writer-{round_}.log"
        with open(log, "w") as handle:
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=handle,
                                    stderr=subprocess.STDOUT, env=cli_env())
        deadline = time.monotonic() + 120
        while len(log.read_text().split()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait(timeout=30)
        written = [int(v) for v in log.read_text().split() if v.isdigit()]

        state = load_checkpoint(tmp_path / "last.pt")
        version = state["version"]
        assert version in (written[-1], written[-1] + 1)  # the last whole write, or one more
        assert all(bool((t == float(version)).all()) for t in state["model"].values())
        slim = load_slim(tmp_path / "slim.pt")
        assert slim.head.bias[0].item() in (float(written[-1]), float(written[-1] + 1))
        last_seen = max(last_seen, version)
    assert last_seen > 1
    # the next normal write of each file clears what the killed writes left behind
    atomic_torch_save(state, tmp_path / "last.pt")
    save_slim(slim, tmp_path / "slim.pt", verify=False)
    assert _temp_files(tmp_path) == []


def _replaced_not_rewritten(paths: list[Path], write_again: Callable[[], None]) -> None:
    """``write_again`` must put new files at ``paths``: a reader of an old one keeps it whole."""
    readers = {}
    try:
        for path in paths:
            assert path.is_file(), path
            readers[path] = (path.read_bytes(), open(path, "rb"))
        write_again()
        for path, (old_bytes, reader) in readers.items():
            assert path.is_file(), path
            assert os.stat(path).st_ino != os.fstat(reader.fileno()).st_ino, f"{path.name} was rewritten in place"
            assert reader.read() == old_bytes, f"{path.name}: the old content changed under its reader"
    finally:
        for _, reader in readers.values():
            reader.close()


def _temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp"))


def test_training_files_are_replaced_atomically(tmp_path: Path) -> None:
    from svite_search.config import config_from_dict
    from svite_search.engine.structured import save_slim, slim_model
    from svite_search.train import Trainer

    trainer = Trainer(config_from_dict(TRAIN_CONFIG), tmp_path / "run", progress=False)
    trainer.fit()
    run = tmp_path / "run"
    _replaced_not_rewritten([run / "last.pt"], trainer.save_checkpoint)
    _replaced_not_rewritten([run / "config.yaml", run / "result.json"], lambda: trainer.fit())
    slim = slim_model(trainer.model, trainer.components["s2vite"])
    save_slim(slim, tmp_path / "slim.pt")
    _replaced_not_rewritten([tmp_path / "slim.pt"], lambda: save_slim(slim, tmp_path / "slim.pt"))
    assert _temp_files(tmp_path) == []


def test_a_finished_study_holds_no_temporary_files(reference_study: Path) -> None:
    assert _temp_files(reference_study) == []


def test_report_files_are_replaced_atomically(tmp_path: Path, reference_study: Path) -> None:
    from svite_search.report import write_report

    study = tmp_path / "study"
    shutil.copytree(reference_study, study, ignore=shutil.ignore_patterns("mlartifacts"))
    report = study / "report"
    _replaced_not_rewritten(sorted(report.iterdir()), lambda: write_report(study))
    assert _temp_files(study) == []


def test_study_files_are_replaced_atomically(tmp_path: Path, reference_study: Path) -> None:
    from svite_search.search import load_spec, prepare_study

    study = tmp_path / "study"
    shutil.copytree(reference_study, study, ignore=shutil.ignore_patterns("mlartifacts"))
    spec = load_spec(write_yaml(tmp_path / "crash.yaml", CRASH_SPEC))
    _replaced_not_rewritten([study / "spec.yaml", study / "study.json"], lambda: prepare_study(spec, study))
