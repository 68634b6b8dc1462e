"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the same directory and renamed over the old one,
so a crash mid-write leaves the previous checkpoint intact. RNG states are stored as tensors and
plain Python values so the safe unpickler accepts them.

Loading checks the archive's CRC-32 checksums first: ``torch.load`` reads tensor bytes without
checking them, so a checkpoint damaged on disk would otherwise resume a run from garbage weights.
"""
from __future__ import annotations

import glob
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError

CHECKPOINT_VERSION = 1


def new_temp_file(path: str | Path) -> str:
    """Create an empty temporary file beside ``path`` for the next version of it.

    Temporary files that earlier writes of ``path`` left behind (their process was killed
    mid-write) are removed first: each is as large as the file itself. That is safe because a
    file has one writer (a run directory has one trainer, and only rank 0 writes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def replace_durably(tmp: str, path: str | Path) -> None:
    """fsync ``tmp``, rename it over ``path`` and fsync the directory, so that after a crash
    ``path`` is either its old or its new version, whole."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(Path(path).parent, os.O_RDONLY)
    except OSError:  # a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    tmp = new_temp_file(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    tmp = new_temp_file(path)
    try:
        torch.save(obj, tmp)
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_text(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (just ``Type`` when the message is empty)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit]}" if lines else type(err).__name__


def check_archive(path: str | Path) -> None:
    """Raise :class:`UserInputError` if ``path`` is a zip archive (``torch.save``'s format) with a
    member whose bytes do not match their CRC-32. Files that are not zip archives are left to
    ``torch.load`` to judge."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise UserInputError(f"{path}: damaged archive ({error_text(err)})") from None
    if bad is not None:
        raise UserInputError(f"{path}: damaged archive (checksum mismatch in {bad.split('/', 1)[-1]})")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, truncated, damaged or foreign file is a
    :class:`UserInputError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such checkpoint")
    check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle
        raise UserInputError(f"{path}: not a readable checkpoint ({error_text(err)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserInputError(f"{path}: not an svite-search checkpoint (no model state)")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training run draws from, as safe-to-load values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_python_state_from_plain(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain: list) -> tuple:
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)
