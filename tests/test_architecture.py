"""The package's import graph against the floors of ``docs/ARCHITECTURE.md``.

Every module's imports are read with ``ast`` (module level, inside functions and under
``TYPE_CHECKING`` alike; relative ones resolved), so an upward import cannot hide in a function.
Checked: every module sits on a floor the document names; every import between two packages
points downwards; and no module imports itself round a loop.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "svite_search"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

#: Imports that break the floors while they are being moved: (importer, imported), each with a
#: comment saying why and what removes it. It is empty and stays so; a new entry is a debt to
#: pay, and :func:`test_known_violations_are_still_real` fails on an entry that has gone.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``svite_search`` modules a module's source imports, wherever the import statement is.
    ``from X import y`` names the module ``X.y`` when that is a module, else ``X``."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return {t for t in found if (t == "svite_search" or t.startswith("svite_search.")) and t != name}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        targets = imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        graph[name] = {t if t in known else _nearest(t, known) for t in targets}
    return graph


def _nearest(target: str, known: set[str]) -> str:
    """``svite_search.x.y`` that is not a module of its own (an attribute): its package."""
    while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def floors() -> list[list[str]]:
    """The floors of the architecture document, top first."""
    match = re.search(r"```layers\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"{DOC}: no ```layers block"
    return [line.split() for line in match.group(1).splitlines() if line.strip()]


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of() -> dict[str, int]:
    return {name: i for i, line in enumerate(floors()) for name in line}


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports between two packages that do not point strictly downwards (the base floor's
    modules may use one another)."""
    floor = floor_of()
    base = len(floors()) - 1
    bad = set()
    for importer, targets in graph.items():
        for imported in targets:
            a, b = top_level(importer), top_level(imported)
            if a == b:
                continue
            if floor[b] <= floor[a] and not (floor[a] == floor[b] == base):
                bad.add((importer, imported))
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_module_sits_on_a_documented_floor() -> None:
    named = [name for line in floors() for name in line]
    assert len(named) == len(set(named)), "a name is on two floors"
    missing = sorted({top_level(m) for m in import_graph()} - set(named))
    assert not missing, f"modules on no floor of docs/ARCHITECTURE.md: {missing}"


def test_imports_point_downwards() -> None:
    found = violations(import_graph()) - KNOWN_VIOLATIONS
    assert not found, "upward or sideways imports:\n" + "\n".join(f"  {a} -> {b}" for a, b in sorted(found))


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join("  " + " <-> ".join(group) for group in found)


def test_known_violations_are_still_real() -> None:
    gone = KNOWN_VIOLATIONS - violations(import_graph())
    assert not gone, f"fixed: remove from KNOWN_VIOLATIONS: {sorted(gone)}"


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from ..report import write_report\n", {"svite_search.report"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..tracking.study import StudyTracker\n",
     {"svite_search.tracking.study"}),
    ("import svite_search.train.trainer as t\n", {"svite_search.train.trainer"}),
    ("from . import study\n", {"svite_search.search.study"}),
])
def test_imports_are_found_wherever_they_are(source: str, expected: set[str]) -> None:
    known = {"svite_search.report", "svite_search.tracking.study", "svite_search.train.trainer",
             "svite_search.search.study", "svite_search.search.runner"}
    assert imports_of(source, "svite_search.search.runner", False, known) == expected


def test_the_checks_catch_what_they_look_for() -> None:
    graph = {"svite_search.search.runner": {"svite_search.report"}, "svite_search.report": set(),
             "svite_search.engine.sparse": {"svite_search.train.trainer"}, "svite_search.train.trainer": set(),
             "svite_search.data": {"svite_search.models"}, "svite_search.models": {"svite_search.data"}}
    assert violations(graph) == {("svite_search.search.runner", "svite_search.report"),
                                 ("svite_search.engine.sparse", "svite_search.train.trainer"),
                                 ("svite_search.data", "svite_search.models"),
                                 ("svite_search.models", "svite_search.data")}
    assert cycles(graph) == [["svite_search.data", "svite_search.models"]]
