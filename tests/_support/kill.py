"""Kill a search process at a point of its study's state (never at a time): polled until the
point is reached, then SIGKILL, as a lost machine or the OOM killer would."""
from __future__ import annotations

import signal
import subprocess
import time
from typing import Callable, TypeVar

from .waiting import HANG_S

T = TypeVar("T")


def kill_when(proc: subprocess.Popen, point: Callable[[], T | None], timeout: float = HANG_S,
              poll: float = 0.1) -> T | None:
    """Poll ``point`` until it returns something other than None, then SIGKILL ``proc`` and
    return it. None when ``proc`` ended first or ``timeout`` passed (it is then killed too, so
    no process outlives the test); either way ``proc`` has ended when this returns."""
    reached = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            reached = point()
            if reached is not None:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(poll)
    finally:
        if proc.poll() is None and reached is None:
            proc.kill()
        proc.wait(timeout=30)
    return reached
