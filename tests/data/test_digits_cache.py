"""The digits come from scikit-learn once per machine: later processes read them, and their
seeded split, from the cache (``SVITE_CACHE_DIR``) without importing scikit-learn, which would
cost every trial process over a second. A damaged or unwritable cache falls back to computing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: a fresh process builds the default digits loaders and reports what it saw
_PROBE = """
import hashlib, json, sys
from svite_search.config import DataConfig
from svite_search.data import build_data
bundle = build_data(DataConfig(), img_size=8, in_chans=1, num_classes=10)
train, val = bundle.train.dataset, bundle.val.dataset
print(json.dumps({
    "sklearn": "sklearn" in sys.modules,
    "train": hashlib.sha256(train.images.numpy().tobytes() + train.labels.numpy().tobytes()).hexdigest(),
    "val": hashlib.sha256(val.images.numpy().tobytes() + val.labels.numpy().tobytes()).hexdigest(),
    "sizes": [len(train), len(val)],
}))
"""


def _probe(cache: Path) -> dict:
    env = {**os.environ, "SVITE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _direct_split() -> tuple[np.ndarray, np.ndarray]:
    """The split computed by scikit-learn itself, as the cache must reproduce it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from svite_search.config import DataConfig

    cfg = DataConfig()
    labels = load_digits().target
    train, val = train_test_split(np.arange(len(labels)), test_size=cfg.val_fraction, random_state=cfg.seed,
                                  stratify=labels)
    return np.sort(train), np.sort(val)


def test_a_warm_cache_serves_the_digits_without_scikit_learn(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = _probe(cache)
    warm = _probe(cache)
    assert cold["sklearn"] is True and warm["sklearn"] is False
    assert warm == {**cold, "sklearn": False}  # the same images, labels and split, byte for byte


def test_the_cached_split_is_scikit_learns(tmp_path: Path, monkeypatch) -> None:
    from svite_search.data import _digits

    monkeypatch.setenv("SVITE_CACHE_DIR", str(tmp_path / "cache"))
    from svite_search.config import DataConfig

    cfg = DataConfig()
    _digits.clear_memory()
    computed = _digits.digits_split(cfg.val_fraction, cfg.seed)
    _digits.clear_memory()
    cached = _digits.digits_split(cfg.val_fraction, cfg.seed)
    expected = _direct_split()
    for got in (computed, cached):
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def _in_process(cache: Path, monkeypatch) -> tuple[np.ndarray, ...]:
    """The digits and the default split as this process computes or reads them from ``cache``."""
    from svite_search.config import DataConfig
    from svite_search.data import _digits

    monkeypatch.setenv("SVITE_CACHE_DIR", str(cache))
    _digits.clear_memory()
    cfg = DataConfig()
    images, labels = _digits._digits_arrays()
    train, val = _digits.digits_split(cfg.val_fraction, cfg.seed)
    _digits.clear_memory()
    return images.numpy(), labels.numpy(), train, val


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_damaged_cache_is_computed_again_and_replaced(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    reference = _in_process(cache, monkeypatch)
    files = sorted(cache.glob("digits*.npz"))
    assert len(files) == 2, files  # the arrays and the split
    whole = {path: path.read_bytes() for path in files}
    for path, data in whole.items():
        path.write_bytes(data[: len(data) // 2])  # a torn write
    assert _same(_in_process(cache, monkeypatch), reference)  # computed again, not read half
    assert {path: path.read_bytes() for path in files} == whole  # and the entries are whole again
    np.savez(files[0], images=np.zeros((3, 8, 8), np.uint8))  # readable, but not the digits
    assert _same(_in_process(cache, monkeypatch), reference)


def test_an_unwritable_cache_still_gives_the_digits(tmp_path: Path, monkeypatch) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache folder would be")
    reference = _in_process(tmp_path / "elsewhere", monkeypatch)
    assert _same(_in_process(not_a_dir, monkeypatch), reference)
    assert not_a_dir.read_text() == "a file where the cache folder would be"
