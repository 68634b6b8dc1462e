"""Who runs a trial: the driver's identity, whether it is still alive, and the user attributes
the harness writes on trials."""
from __future__ import annotations

import os
import socket
from typing import Any

from optuna.trial import TrialState

HEARTBEAT_S, GRACE_S = 30, 120
#: user attributes the harness writes on trials
DRIVER_ATTR, REASON_ATTR, RETRY_ATTR, SOURCE_ATTR = "driver", "fail_reason", "retry_of", "source"
#: the user attribute of a repeat recorded untrained (``search.repeats: skip``, :mod:`._repeats`):
#: the number of the trial that holds its setting
REPEAT_ATTR = "repeat_of"
INTERRUPTED = "interrupted: its search process ended before the trial did (rerun queued)"


def driver_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_gone(driver: str | None) -> bool:
    """True when ``driver`` ran on this host and its process no longer exists."""
    if not driver or ":" not in driver:
        return True
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's driver: only its heartbeat can tell
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def is_skipped_repeat(trial: Any) -> bool:
    """Whether a (frozen) trial is a repeat recorded untrained (PRUNED with :data:`REPEAT_ATTR`)."""
    return trial.state == TrialState.PRUNED and REPEAT_ATTR in trial.user_attrs
