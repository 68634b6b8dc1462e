"""The engine's examples run: every ``::`` literal block of the engine's docstrings (module,
class and function docstrings) and the README's engine example (its ```python blocks).

Each block runs as a doctest does, in a fresh namespace holding its module's globals, plus the
few names a reader of a training-loop example already has in hand (:func:`reader_names`): a tiny
timm ViT ``model`` taking 224-pixel images, its ``optimizer``, a one-batch ``loader`` over
``epochs = 1``, ``criterion``, one batch ``images`` / ``targets``, ``torch``, ``F``, ``math``,
``timm``. Blocks in ``>>>`` form are run by :mod:`doctest` and their printed output compared.
A block that writes files writes them into a temporary directory.
"""
from __future__ import annotations

import ast
import doctest
import importlib
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import svite_search  # noqa: F401  (the torchvision guard, before timm)
import timm
from timm.models.vision_transformer import VisionTransformer

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "svite_search" / "engine"
README = ROOT / "README.md"


def _literal_blocks(doc: str) -> list[str]:
    """The ``::`` literal blocks of a reST docstring, dedented."""
    lines = doc.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        body = []
        for follow in lines[i + 1:]:
            if follow.strip() and not follow.startswith((" ", "\t")):
                break
            body.append(follow)
        text = textwrap.dedent("\n".join(body)).strip("\n")
        if text.strip():
            blocks.append(text)
    return blocks


def engine_examples() -> list[tuple[str, str, str]]:
    """(module name, where, code) of every literal block in the engine's docstrings."""
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        owners = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        for owner in owners:
            doc = ast.get_docstring(owner, clean=True)
            for index, code in enumerate(_literal_blocks(doc or "")):
                where = f"{module}:{getattr(owner, 'name', 'module')}:{index}"
                found.append((module, where, code))
    return found


def readme_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def reader_names() -> dict[str, Any]:
    """What a training-loop example assumes its reader has: a model, its optimizer, data."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=224, patch_size=32, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    images, targets = torch.randn(2, 3, 224, 224), torch.randint(0, 10, (2,))
    return {
        "torch": torch, "F": F, "math": math, "timm": timm,
        "model": model,
        "optimizer": torch.optim.AdamW(model.parameters(), lr=5e-4),
        "loader": [(images, targets)],
        "epochs": 1,
        "criterion": torch.nn.CrossEntropyLoss(),
        "images": images, "targets": targets,
    }


def _run(code: str, namespace: dict[str, Any], name: str) -> None:
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, namespace, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, out=lambda text: print(text, end=""))
        assert runner.failures == 0, f"{name}: doctest output differs (see the captured output)"
        return
    exec(compile(code, name, "exec"), namespace)


def test_the_engine_and_the_readme_have_examples() -> None:
    wheres = [where for _, where, _ in engine_examples()]
    assert len(wheres) >= 15
    for module in ("svite_search.engine", "svite_search.engine.base", "svite_search.engine.sparse",
                   "svite_search.engine.structured", "svite_search.engine.tokens"):
        assert any(w.startswith(f"{module}:module:") for w in wheres), module
    assert len(readme_examples()) == 1


@pytest.mark.parametrize("module, where, code", engine_examples(), ids=[w for _, w, _ in engine_examples()])
def test_engine_docstring_example_runs(module: str, where: str, code: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = {**vars(importlib.import_module(module)), **reader_names(), "__name__": "__example__"}
    _run(code, namespace, where)


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_engine_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    """The README's example as written; the reader supplies ``epochs`` and ``loader``."""
    monkeypatch.chdir(tmp_path)
    names = reader_names()
    namespace = {"__name__": "__example__", "epochs": names["epochs"], "loader": names["loader"]}
    _run(readme_examples()[index], namespace, f"README.md:python:{index}")
    assert "'density'" in capsys.readouterr().out  # it prints the sparsifier's stats
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert set(saved) == {"model", "svite"} and saved["svite"]["step_count"] == 1
