"""Ways a study stops before its target, and the one line each ends with.

* :class:`InfrastructureStop`: the machine, not the trial, failed (a full disk, a read-only or
  forbidden path, a file size limit). Recording such a trial as an ordinary failure would burn
  the trial and the point it ran (an enqueued baseline, a grid point) on every retry, so the
  study stops instead; the trial is queued again, to rerun once the disk is fixed.
* :class:`SearchInterrupted`: SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop). Running trials
  are failed with the reason ``interrupted`` and queued again; the same command resumes.

Both derive from ``BaseException``, as ``KeyboardInterrupt`` does: Ray Tune records an
``Exception`` raised in a callback as a trial error and goes on, while these must reach the
driver and end the study.

Example::

    with stop_signals():
        run_the_study()          # SIGTERM raises SearchInterrupted here
"""
from __future__ import annotations

import contextlib
import errno
import signal
import threading
from typing import Any, Iterator

#: errno values that mean "the storage under the study is unusable", not "this trial is bad"
INFRASTRUCTURE_ERRNOS = frozenset(
    code for code in (getattr(errno, name, None) for name in
                      ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "EIO", "ENOTDIR"))
    if code is not None
)


class StudyStopped(BaseException):
    """The study stopped before ``n_trials``; ``str()`` is the one line the command prints."""

    exit_code = 1


class InfrastructureStop(StudyStopped):
    """A trial hit an error of the machine (see :func:`infrastructure_error`)."""


class SearchInterrupted(StudyStopped, KeyboardInterrupt):
    """SIGINT or SIGTERM reached the driver. The exit code is the shell's: 128 + the signal."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {self.signal_name}")


def interrupted_reason(signal_name: str | None = None) -> str:
    """The fail reason of a trial a signal stopped (it starts with ``interrupted``)."""
    by = f" by {signal_name}" if signal_name else ""
    return f"interrupted{by}: the search stopped before the trial ended (rerun queued)"


def infrastructure_error(err: BaseException) -> str | None:
    """``"PATH: cause"`` when ``err`` (or an error it was raised from) is an ``OSError`` of the
    storage: no space, quota, file size limit, read-only file system, permission denied, an I/O
    error, a file where a directory was expected. ``None`` for any other error."""
    seen: set[int] = set()
    found: list[OSError] = []
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in INFRASTRUCTURE_ERRNOS:
            found.append(current)
        current = current.__cause__ or current.__context__
    if not found:
        return None
    named = [e for e in found if e.filename is not None] or found  # a close() after a failed write has no name
    first = named[0]
    code = errno.errorcode.get(first.errno, str(first.errno))
    path = first.filename if first.filename is not None else "(path unknown)"
    return f"{path}: {first.strerror or code} ({code})"


_handling = threading.local()
_received: list[int] = []  # the signal our handler took, for the KeyboardInterrupt Ray raises instead


def _raise_interrupted(signum: int, frame: Any) -> None:
    # further signals would interrupt the bookkeeping of this stop: ignore them until it is done
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _received.append(int(signum))
    raise SearchInterrupted(signum)


def as_stopped(err: BaseException) -> BaseException:
    """The :class:`SearchInterrupted` behind ``err``: Ray's core worker, waiting in C++ when our
    handler raises, replaces the handler's exception with a plain ``KeyboardInterrupt``. Any
    other error comes back as it is."""
    if isinstance(err, KeyboardInterrupt) and not isinstance(err, SearchInterrupted) and _received:
        return SearchInterrupted(_received[-1])
    return err


def claim_signals() -> None:
    """(Re)install the handlers inside :func:`stop_signals`; Ray's ``init`` replaces the SIGTERM
    handler, so the Ray executor calls this once Ray is up."""
    if getattr(_handling, "active", False) and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise_interrupted)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`SearchInterrupted` in the main thread while inside; the
    previous handlers come back on leaving. Elsewhere than the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    _handling.active = True
    claim_signals()
    try:
        yield
    finally:
        _handling.active = False
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
