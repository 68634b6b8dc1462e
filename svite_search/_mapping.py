"""Nested mappings and their dotted keys (``sparsity.density``).

Configs, specs and MLflow params all name a value by its dotted path through a nested mapping;
this is the one place that turns one form into the other. Standard library only.
"""
from __future__ import annotations

from typing import Any, Mapping, MutableMapping


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}``: every leaf by its dotted key.

    Lists and other values are leaves, kept as they are; an empty mapping has no leaves. A node
    that is not a mapping is one leaf named ``prefix``."""
    flat: dict[str, Any] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        flat[prefix] = node
    return flat


def set_dotted(mapping: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``sparsity.density``) in a nested mapping, creating the sections on the way."""
    parts = key.split(".")
    node = mapping
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
