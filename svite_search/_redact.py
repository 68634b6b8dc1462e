"""Credentials never leave the process: database and tracking URLs are masked wherever they are
written (MLflow params and artifacts, ``spec.yaml``/``study.json`` copies, ``--json``) or printed.

``postgresql://user:secret@db/optuna`` becomes ``postgresql://user:***@db/optuna``; query
parameters that carry secrets (``password=``, ``token=``, ...) are masked the same way. The URL
the process connects with is never changed, only what it records.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<secret>[^@/\s]+)@")
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|pass|token|secret|api_key|apikey|access_key|"
                    r"secret_key|auth|sslpassword)=)(?P<secret>[^&;\s#]+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it (and secret query values) replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def is_masked(text: str) -> bool:
    """Whether ``text`` is a URL this module masked (it cannot be connected with)."""
    return f":{MASK}@" in text or f"={MASK}" in text


def mask_credentials(value: Any) -> Any:
    """A copy of a nested mapping/list with every string passed through :func:`mask_url`."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: mask_credentials(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_credentials(item) for item in value)
    return value
