"""Files that are never half-written: atomic replacement, and damaged-archive detection.

Every file svite-search writes (checkpoints, slim models, configs, results, study files) goes to
a temporary file beside its target and is renamed over it, so a crash or a kill leaves either the
old version or the new one, whole. The file gets the mode an ordinary ``open`` would give it
(``0666`` less the umask), not the private ``0600`` of a temporary file: a team sharing a
cluster reads each other's runs when its umask says so. Used by the trainer and by the engine's slim export alike;
imports only the standard library and the error types (torch only inside :func:`atomic_torch_save`, so
the text writers serve commands that never load torch).
"""
from __future__ import annotations

import glob
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

from .errors import UserInputError, first_line


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows (Linux reports it
    in ``/proc/self/status``); elsewhere set and restored under a lock."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; the target gets open()'s mode
    except OSError:  # a file system without modes: the rename still works
        pass
    finally:
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
    """``torch.save`` to a temporary file, then rename over ``path``.

    torch writes through a Python file handle here so that a failed write (a full disk, a file
    size limit) surfaces as the ``OSError`` naming ``path``, not as torch's
    ``RuntimeError: [enforce fail at inline_container.cc]``."""
    import torch

    tmp = new_temp_file(path)
    try:
        with open(tmp, "wb") as handle:
            try:
                torch.save(obj, handle)
            except RuntimeError as err:
                cause = err.__context__ or err.__cause__
                if isinstance(cause, OSError) and cause.errno is not None:
                    raise OSError(cause.errno, cause.strerror, str(path)) from err
                raise
        replace_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_text(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (just ``Type`` when the message is empty)."""
    line = first_line(err, limit)
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


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


def load_torch_file(path: str | Path, what: str, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` of a file svite-search wrote, ``what`` naming the
    kind of file (``"checkpoint"``, ``"slim model file"``). A missing, damaged (see
    :func:`check_archive`), truncated or foreign file is a :class:`UserInputError` naming the
    path: the one error handling of every reader of torch files (checkpoints, slim models)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such {what}")
    check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, wrong format, unsafe pickle
        raise UserInputError(f"{path}: not a readable {what} ({error_text(err)})") from None
