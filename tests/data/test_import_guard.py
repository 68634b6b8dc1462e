"""The torchvision import guard: patches only a broken torchvision, leaves a healthy one alone,
and runs where timm is first imported, so the package and the quick commands import no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str, extra_path: Path | None = None) -> str:
    env_path = f"import sys; sys.path.insert(0, {str(extra_path)!r})\n" if extra_path else ""
    proc = subprocess.run(
        [sys.executable, "-c", env_path + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_timm_and_torchvision_import_after_the_guard() -> None:
    out = _run(
        """
        import svite_search.models, torch, torchvision, timm  # the models import timm (guarded)
        from svite_search import _torchvision_guard as guard
        from torchvision import transforms  # the python side works either way
        has_schema = bool(torch._C._jit_get_schemas_for_operator("torchvision::nms"))
        print(guard.patched, has_schema)
        """
    )
    patched, has_schema = out.split()
    assert has_schema == "True"  # torchvision's own op, or the guard's stand-in schema


def test_guard_changes_nothing_when_torchvision_is_healthy(tmp_path: Path) -> None:
    healthy = tmp_path / "torchvision"
    healthy.mkdir()
    (healthy / "__init__.py").write_text("HEALTHY = True\n")
    out = _run(
        """
        import torch
        import torchvision
        assert torchvision.HEALTHY
        from svite_search import _torchvision_guard as guard
        print(guard.ensure_torchvision(), guard.patched,
              bool(torch._C._jit_get_schemas_for_operator("torchvision::nms")))
        """,
        extra_path=tmp_path,
    )
    assert out == "False False False"


def test_guard_does_not_hide_unrelated_import_errors(tmp_path: Path) -> None:
    broken = tmp_path / "torchvision"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('something else entirely')\n")
    out = _run(
        """
        try:
            import svite_search.models  # imports timm, so runs the guard first
        except ImportError as err:
            import sys
            guard = sys.modules["svite_search._torchvision_guard"]
            print("raised:", err, guard.patched)
        """,
        extra_path=tmp_path,
    )
    assert out == "raised: something else entirely False"


HEAVY = ("torch", "torchvision", "timm", "ray", "mlflow")
PACKAGE = Path(__file__).resolve().parents[2] / "svite_search"


def _heavy_modules_after(code: str) -> list[str]:
    out = _run(code + "\nimport sys; print('loaded:', *sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (HEAVY,))
    return out.splitlines()[-1].split()[1:]


def test_importing_the_package_imports_no_torch() -> None:
    assert _heavy_modules_after("import svite_search") == []


def test_help_imports_no_torch() -> None:
    code = """
import contextlib, os, runpy, sys
sys.argv = ["svite_search", "--help"]
try:
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        runpy.run_module("svite_search", run_name="__main__")
except SystemExit as done:
    assert done.code == 0, done.code
"""
    assert _heavy_modules_after(code) == []


def test_python_m_help_runs_and_lists_the_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "svite_search", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "report" in proc.stdout and "search" in proc.stdout


def test_the_report_code_imports_neither_torch_nor_torchvision() -> None:
    loaded = _heavy_modules_after("import svite_search.report, svite_search.cli._report, svite_search.search.study")
    assert "torch" not in loaded and "torchvision" not in loaded and "timm" not in loaded


def _guarded_before(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True when a call of ensure_torchvision() comes before ``node`` in one of its enclosing bodies."""
    child, scope = node, parents.get(node)
    while scope is not None:
        for stmt in getattr(scope, "body", []):
            if stmt is child or getattr(stmt, "lineno", 0) >= getattr(child, "lineno", 0):
                break
            for inner in ast.walk(stmt):
                if isinstance(inner, ast.Call) and getattr(inner.func, "id", getattr(inner.func, "attr", None)) == "ensure_torchvision":
                    return True
        child, scope = scope, parents.get(scope)
    return False


def test_every_timm_import_in_the_package_runs_the_guard_first() -> None:
    unguarded = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(name.split(".")[0] in ("timm", "torchvision") for name in names) and not _guarded_before(node, parents):
                if path.name != "_torchvision_guard.py":
                    unguarded.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert unguarded == []
