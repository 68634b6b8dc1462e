"""A real headless browser for the HTML reports: Debian's ``chromium``, offline.

``render(page)`` loads a local page with the network cut off (every host name resolves to
nothing, every request goes to a dead proxy, no background services), lets its scripts run, and
returns the DOM as the browser built it. Where chromium is absent the test is skipped with the
reason, except under CI (``CI=true``), where a missing browser is a failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

OFFLINE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
    "--virtual-time-budget=15000",
)


def chromium() -> str:
    """The chromium executable, or skip (fail under CI) with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (apt-get install chromium): the HTML reports are not rendered"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + "; CI must have it (.ci/run installs it)")
    pytest.skip(reason)


def _run(page: Path, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium(), *OFFLINE_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False,
        )


def render(page: Path) -> str:
    """The page's DOM after its scripts ran, loaded from file:// with no network."""
    done = _run(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, out: Path, size: str = "1100,700") -> Path:
    """A PNG of the rendered page (for a person to look at; tests assert on the DOM)."""
    done = _run(page, f"--window-size={size}", f"--screenshot={out.resolve()}")
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return out
