"""The paper's grid of settings and the values it reports, each with its source.

The grid and the reported values live in ``paper_results.json`` (package data of
:mod:`svite_search.report`). A :class:`Setting` is one row's configuration: DeiT-Tiny/Small/Base
× dense, SViTE at 30-70 % sparsity, S²ViTE at the authors' (head, MLP) density pairs, and SViTE+
at 187/177/138/99 of 197 tokens with 50 % weight sparsity. Other models (the toy ``vit_digits``)
get the same grid: the paper's token keep counts become the same shares of that model's patches.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

PAPER_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
#: The paper's token counts are out of 196 patches + cls; other models keep the same share.
PAPER_PATCHES = 196


@lru_cache(maxsize=1)
def paper_results() -> dict[str, Any]:
    """The paper's grid and reported values (``paper_results.json``)."""
    text = resources.files("svite_search.report").joinpath("paper_results.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class Setting:
    """One row's configuration. ``tokens_kept``/``tokens_total`` count every token, cls included."""

    model: str
    method: str  # dense | svite | s2vite
    density: float | None = None
    head_density: float | None = None
    mlp_density: float | None = None
    tokens_kept: int | None = None
    tokens_total: int | None = None
    prefix_tokens: int = 1

    @property
    def patches_kept(self) -> int | None:
        return None if self.tokens_kept is None else self.tokens_kept - self.prefix_tokens

    def describe(self) -> str:
        """The row's label. Weight sparsity is always named as such with its density beside it
        ("30 % sparse (density 0.7)"); S²ViTE's head and MLP figures are densities (shares kept)."""
        tokens = f"{self.tokens_kept}/{self.tokens_total} tokens" if self.tokens_kept is not None else ""
        if self.method == "dense":
            return "dense" + (f" + {tokens}" if tokens else "")
        if self.method == "s2vite":
            base = f"S²ViTE, head density {self.head_density:g}, MLP density {self.mlp_density:g}"
            return base + (f" + {tokens}" if tokens else "")
        density = self.density if self.density is not None else 1.0
        sparsity = f"{100 * (1 - density):.0f} % sparse (density {density:g})"
        return f"SViTE+ {tokens}, {sparsity}" if tokens else f"SViTE, {sparsity}"


def model_args(num_classes: int | None) -> dict[str, Any]:
    """``timm.create_model`` arguments of a table's models: the head's classes when given, else
    each model's own (1000 for DeiT, 10 for the digits presets)."""
    return {} if num_classes is None else {"num_classes": num_classes}


def geometry(model: str, num_classes: int | None = None) -> tuple[int, int]:
    """(patches, prefix tokens) of a model, read from its shape-only build."""
    from ..macs import shape_model

    vit = shape_model(model, **model_args(num_classes))
    return int(vit.patch_embed.num_patches), int(vit.num_prefix_tokens)


def paper_settings(models: Sequence[str] | None = None, num_classes: int | None = None) -> list[Setting]:
    """Every setting of the paper's grid for ``models`` (default DeiT-Tiny, Small, Base)."""
    data = paper_results()
    grid = data["grid"]
    all_pairs = sorted({tuple(p) for m in data["models"].values() for p in m["s2vite"]}, reverse=True)
    out: list[Setting] = []
    for model in models or PAPER_MODELS:
        patches, prefix = geometry(model, num_classes)
        total = patches + prefix
        out.append(Setting(model, "dense"))
        out += [Setting(model, "svite", density=d) for d in grid["svite_densities"]]
        own = [tuple(p) for p in data["models"].get(model, {}).get("s2vite", [])]
        for head, mlp in own + [p for p in all_pairs if p not in own]:
            out.append(Setting(model, "s2vite", head_density=head, mlp_density=mlp))
        for kept in grid["svite_plus_keep_tokens"]:
            patches_kept = max(1, round((kept - 1) / PAPER_PATCHES * patches))
            out.append(Setting(model, "svite", density=grid["svite_plus_density"],
                               tokens_kept=patches_kept + prefix, tokens_total=total, prefix_tokens=prefix))
    return out


def same_value(a: float | None, b: float | None) -> bool:
    """Two optional settings values are the same (both unset, or equal to 1e-6)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-6


def reported_for(setting: Setting) -> Mapping[str, Any] | None:
    """What the paper reports for ``setting`` (top-1, savings, its source), or ``None``."""
    for item in paper_results()["reported"]:
        if item["model"] != setting.model or item["method"] != setting.method:
            continue
        if setting.method == "svite" and not same_value(item.get("density"), setting.density):
            continue
        if setting.method == "s2vite" and not (same_value(item.get("head_density"), setting.head_density)
                                               and same_value(item.get("mlp_density"), setting.mlp_density)):
            continue
        if item.get("keep_tokens") != setting.tokens_kept:
            continue
        return item
    return None
