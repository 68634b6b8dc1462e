"""The per-user cache: results that are the same every time, computed once per machine.

What lives there is derived, never a record: an empty migrated MLflow store per MLflow version,
the digits arrays and their seeded split per scikit-learn version. Each entry is written
atomically and checked when read; a missing, damaged or unwritable cache only costs the
computation it would have saved. ``SVITE_CACHE_DIR`` overrides the place
(default ``$XDG_CACHE_HOME/svite-search``, else ``~/.cache/svite-search``).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "SVITE_CACHE_DIR"


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "svite-search"
