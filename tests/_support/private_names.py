"""A scan for uses of other libraries' private names in a module's source (the package keeps
to Optuna's and Ray's public APIs; the few internals it needs sit in one module each)."""
from __future__ import annotations

import ast
from pathlib import Path

#: the one function allowed to name a hidden ``ray.init`` option (behind its version check)
HIDDEN_OPTION_OWNER = "session_folder_kwargs"


def private_uses(path: Path) -> list[str]:
    """Every use of another object's private name in the module at ``path``: ``x._name`` where x
    is not ``self``, ``self._name`` the module does not define (a base class's), imports of private modules of Optuna or Ray, ``_keyword=`` arguments, and a
    ``"_name"`` string outside the one function allowed to pass a hidden ``ray.init`` option."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    owners: dict[int, str] = {}
    own: set[str] = set()  # the module's own private names: its methods and what it assigns to self
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own.add(node.name)
            for inner in ast.walk(node):
                owners.setdefault(id(inner), node.name)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{where}: .{node.attr} of {ast.unparse(node.value)}")
            elif node.attr not in own:  # a base class's private (OptunaSearch's _ot_study)
                found.append(f"{where}: inherited .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in ("optuna", "ray") and any(map(private, node.module.split("."))):
                found.append(f"{where}: from {node.module} import")
            found.extend(f"{where}: import {a.name}" for a in node.names if private(a.name))
        elif isinstance(node, ast.Import):
            found.extend(f"{where}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] in ("optuna", "ray") and any(map(private, a.name.split("."))))
        elif isinstance(node, ast.keyword) and node.arg and private(node.arg):
            found.append(f"{where}: keyword {node.arg}=")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and private(node.value)
              and node.value.isidentifier() and owners.get(id(node)) != HIDDEN_OPTION_OWNER):
            found.append(f"{where}: {node.value!r}")
    return found
