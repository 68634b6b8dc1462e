"""The torchvision import guard: patches only a broken torchvision, leaves a healthy one alone."""
from __future__ import annotations

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
        import svite_search, torch, torchvision, timm
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
            import svite_search
        except ImportError as err:
            import sys
            guard = sys.modules["svite_search._torchvision_guard"]
            print("raised:", err, guard.patched)
        """,
        extra_path=tmp_path,
    )
    assert out == "raised: something else entirely False"
