"""The paper's sparsity tables beside our analytic MACs and, where runs exist, our accuracy.

The paper's grid and reported values live in ``paper_results.json`` (package data), each value
with its source. A row is one setting: DeiT-Tiny/Small/Base × dense, SViTE at 30-70 %
sparsity, S²ViTE at the authors' (head, MLP) density pairs, and SViTE+ at 187/177/138/99 of
197 tokens with 50 % weight sparsity. For every row we compute the MACs saving analytically
(:func:`svite_search.metrics.flops.macs_for`), show the paper's top-1 where it reports one, and
the mean ± sd top-1 of our finished runs with that setting (any ``result.json`` with its
``config.yaml`` under the ``--runs`` directories: ``train`` runs and study trials alike). Runs
pool into one cell only when they share a recipe (:func:`recipe_of`: everything but the setting
and the seed); a setting run with two recipes gets a row for each.

Other models (the toy ``vit_digits``) get the same grid: the paper's token keep counts become
the same shares of that model's patches.

Example::

    rows = paper_rows()
    next(r for r in rows if r["setting"] == "SViTE+ 187/197 tokens, 50 % sparse (density 0.5)"
         and r["label"] == "DeiT-Small")["macs_saving_pct"]
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..errors import UserInputError

PAPER_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
#: The paper's token counts are out of 196 patches + cls; other models keep the same share.
PAPER_PATCHES = 196
#: Classes of the heads counted for the digits presets (their data set has 10).
PRESET_CLASSES = {"vit_digits": 10, "vit_digits_small": 10}
#: Folders under a study directory that hold copies of runs, not runs.
_SKIP_DIRS = {"mlartifacts", "mlruns", "ray_results"}

COLUMNS = (
    "model", "label", "setting", "method", "density", "head_density", "mlp_density", "tokens_kept", "tokens_total",
    "dense_gmacs", "gmacs", "macs_saving_pct", "paper_top1", "paper_flops_saving_pct", "paper_time_saving_pct",
    "paper_source", "paper_note", "our_top1", "our_top1_sd", "our_runs", "our_recipe", "our_run_dirs",
    "our_macs_saving_pct", "sparsity",
)


@lru_cache(maxsize=1)
def paper_results() -> dict[str, Any]:
    """The paper's grid and reported values (``paper_results.json``)."""
    text = resources.files(__package__).joinpath("paper_results.json").read_text(encoding="utf-8")
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


def _model_args(model: str, num_classes: int | None) -> tuple[str, dict[str, Any]]:
    """(timm name, create kwargs) of a preset or timm model, with the head's classes."""
    from .._torchvision_guard import ensure_torchvision

    ensure_torchvision()
    import timm

    from ..models import PRESETS

    if model in PRESETS:
        base, kwargs = PRESETS[model].base, dict(PRESETS[model].kwargs)
        kwargs["num_classes"] = num_classes or PRESET_CLASSES.get(model, 1000)
    elif timm.is_model(model):
        base, kwargs = model, {"num_classes": num_classes or 1000}
    else:
        raise UserInputError(f"--model: unknown model {model!r} (not a preset nor a timm model name)")
    return base, kwargs


@lru_cache(maxsize=16)
def _shape_model(model: str, num_classes: int | None) -> Any:
    """A shape-only (``meta`` device) build of a model, made once: every row reuses it."""
    from ..metrics.flops import as_vision_transformer, meta_model

    base, kwargs = _model_args(model, num_classes)
    return as_vision_transformer(meta_model(base, **kwargs))


def _geometry(model: str, num_classes: int | None) -> tuple[int, int]:
    """(patches, prefix tokens) of a model."""
    vit = _shape_model(model, num_classes)
    return int(vit.patch_embed.num_patches), int(vit.num_prefix_tokens)


def setting_macs(setting: Setting, num_classes: int | None = None) -> Any:
    """The :class:`~svite_search.metrics.flops.MacsReport` of a setting: what
    :func:`~svite_search.metrics.flops.macs_for` counts, on one shared shape-only model."""
    import math as _math

    from ..engine.sparse import layer_counts, layer_densities, masked_parameters
    from ..metrics.flops import patch_tokens_kept, structure_for, vit_macs

    vit = _shape_model(setting.model, num_classes)
    layer_density = None
    if setting.density is not None:
        shapes = {name: tuple(p.shape) for name, p in masked_parameters(vit).items()}
        counts = layer_counts(shapes, layer_densities(shapes, setting.density, "erk"))
        layer_density = {name: counts[name] / _math.prod(shape) for name, shape in shapes.items()}
    structure = None
    if setting.head_density is not None or setting.mlp_density is not None:
        structure = structure_for(vit, setting.head_density, setting.mlp_density)
    tokens = patch_tokens_kept(int(vit.patch_embed.num_patches), int(vit.num_prefix_tokens), setting.tokens_kept)
    return vit_macs(vit, layer_density=layer_density, tokens=tokens, structure=structure)


def paper_settings(models: Sequence[str] | None = None, num_classes: int | None = None) -> list[Setting]:
    """Every setting of the paper's grid for ``models`` (default DeiT-Tiny, Small, Base)."""
    data = paper_results()
    grid = data["grid"]
    all_pairs = sorted({tuple(p) for m in data["models"].values() for p in m["s2vite"]}, reverse=True)
    out: list[Setting] = []
    for model in models or PAPER_MODELS:
        patches, prefix = _geometry(model, num_classes)
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


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-6


def _reported(setting: Setting) -> Mapping[str, Any] | None:
    for item in paper_results()["reported"]:
        if item["model"] != setting.model or item["method"] != setting.method:
            continue
        if setting.method == "svite" and not _close(item.get("density"), setting.density):
            continue
        if setting.method == "s2vite" and not (_close(item.get("head_density"), setting.head_density)
                                               and _close(item.get("mlp_density"), setting.mlp_density)):
            continue
        if item.get("keep_tokens") != setting.tokens_kept:
            continue
        return item
    return None


# ----------------------------------------------------------------------------- our runs


@dataclass(frozen=True)
class RunRecord:
    """A finished run found on disk: what it trained and what it measured."""

    path: str
    model: str
    method: str
    density: float | None
    head_density: float | None
    mlp_density: float | None
    patches_kept: int | None
    top1: float | None
    flops_savings: float | None
    recipe: str = ""  # everything it was trained with except the setting and the seed, as JSON


#: Config keys that are not part of a run's recipe: its name, where it logs, how many threads,
#: whether it checkpoints, and the seeds (runs that differ only there are repeats).
_NOT_RECIPE = {"name", "tracking", "train.seed", "data.seed", "train.threads", "train.checkpoint", "train.device",
               "data.num_workers", "data.root", "data.eval_batch_size"}
#: Config keys that make the setting (a row of the table), also not part of the recipe.
_SETTING_KEYS = {"method", "sparsity.density", "sparsity.head_density", "sparsity.mlp_density", "tokens.keep_ratio",
                 "tokens.keep_tokens"}


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def recipe_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a run config: every resolved value except the setting, the seeds and the
    bookkeeping (:data:`_NOT_RECIPE`), and except the knobs its method does not use (a dense
    run's sparsity schedule, S²ViTE's head density in an SViTE run, the token temperature when
    no token is dropped). Two runs pool into one cell only when their recipes are equal."""
    flat = _flatten(cfg)
    method = str(cfg.get("method", "dense"))
    tokens = cfg.get("tokens") or {}
    selecting = tokens.get("keep_tokens") is not None or float(tokens.get("keep_ratio", 1.0) or 1.0) < 1.0
    recipe = {}
    for key, value in flat.items():
        if key in _NOT_RECIPE or key.split(".")[0] in _NOT_RECIPE or key in _SETTING_KEYS:
            continue
        if key.startswith("sparsity.") and method == "dense":
            continue
        if key.startswith("tokens.") and not selecting:
            continue
        recipe[key] = value
    return recipe


def _patches_kept(cfg: Mapping[str, Any], result: Mapping[str, Any]) -> int | None:
    if result.get("keep_tokens") is not None:
        return int(result["keep_tokens"])
    tokens = cfg.get("tokens") or {}
    if tokens.get("keep_tokens") is not None:
        return int(tokens["keep_tokens"])
    return None if float(tokens.get("keep_ratio", 1.0)) >= 1.0 else -1  # selector on, count unknown


def find_runs(directories: Iterable[str | Path]) -> list[RunRecord]:
    """Every finished run (``result.json`` beside its ``config.yaml``) under ``directories``."""
    records = []
    for directory in directories:
        root = Path(directory)
        if not root.exists():
            raise UserInputError(f"--runs: {root}: no such directory")
        for result_path in sorted(root.rglob("result.json")):
            if _SKIP_DIRS & set(result_path.relative_to(root).parts):
                continue  # the copies a tracked run keeps as MLflow artifacts
            config_path = result_path.with_name("config.yaml")
            if not config_path.is_file():
                continue
            try:
                result = json.loads(result_path.read_text())
                cfg = yaml.safe_load(config_path.read_text()) or {}
            except (OSError, ValueError, yaml.YAMLError):
                continue
            sparsity = cfg.get("sparsity") or {}
            method = str(cfg.get("method", "dense"))
            records.append(RunRecord(
                path=str(result_path.parent),
                model=str((cfg.get("model") or {}).get("name", "")),
                method=method,
                density=float(sparsity["density"]) if method == "svite" and "density" in sparsity else None,
                head_density=float(sparsity["head_density"]) if method == "s2vite" else None,
                mlp_density=float(sparsity["mlp_density"]) if method == "s2vite" else None,
                patches_kept=_patches_kept(cfg, result),
                top1=result.get("top1"),
                flops_savings=result.get("flops_savings"),
                recipe=json.dumps(recipe_of(cfg), sort_keys=True, default=str),
            ))
    return records


def matches(setting: Setting, run: RunRecord) -> bool:
    """Whether ``run`` trained the configuration of ``setting``."""
    if run.model != setting.model or run.method != setting.method or run.patches_kept != setting.patches_kept:
        return False
    if setting.method == "svite":
        return _close(run.density, setting.density)
    if setting.method == "s2vite":
        return _close(run.head_density, setting.head_density) and _close(run.mlp_density, setting.mlp_density)
    return True


def _mean(values: list[float]) -> float | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(values) / len(values) if values else None


def _sd(values: list[float]) -> float | None:
    """Sample standard deviation (n - 1), ``None`` below two values."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def recipe_names(records: Sequence[RunRecord]) -> dict[str, str]:
    """A short name per distinct recipe (``R1``, ``R2``, ... by how many runs use it)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.recipe] = counts.get(r.recipe, 0) + 1
    ordered = sorted(counts, key=lambda k: (-counts[k], k))
    return {recipe: f"R{i}" for i, recipe in enumerate(ordered, 1)}


def recipe_differences(recipes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Per recipe name, the values where it differs from the other recipes that have that key
    (``train.epochs=20``); keys one method does not use (a dense run's schedule) are not differences."""
    shown: dict[str, str] = {}
    for name, recipe in recipes.items():
        parts = []
        for key, value in sorted(recipe.items()):
            values = {json.dumps(r[key], default=str) for r in recipes.values() if key in r}
            if len(values) > 1:
                parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        shown[name] = ", ".join(parts)
    return shown


# ----------------------------------------------------------------------------- rows


def paper_rows(models: Sequence[str] | None = None, runs: Sequence[str | Path] = (),
               num_classes: int | None = None, records: Sequence[RunRecord] | None = None) -> list[dict[str, Any]]:
    """One dict per setting (per setting and recipe where runs of several recipes match) with
    the columns of :data:`COLUMNS`; ``records`` saves a second scan of ``runs``."""
    records = list(records) if records is not None else (find_runs(runs) if runs else [])
    settings = paper_settings(models, num_classes)
    names = recipe_names([r for r in records if any(matches(s, r) for s in settings)])
    roots = [Path(r) for r in runs]
    labels = {name: info["label"] for name, info in paper_results()["models"].items()}
    rows = []
    for setting in settings:
        report = setting_macs(setting, num_classes)
        reported = _reported(setting) or {}
        mine = [r for r in records if matches(setting, r)]
        base = {
            "model": setting.model,
            "label": labels.get(setting.model, setting.model),
            "setting": setting.describe(),
            "method": setting.method,
            "density": setting.density,
            "sparsity": None if setting.density is None else 1.0 - setting.density,
            "head_density": setting.head_density,
            "mlp_density": setting.mlp_density,
            "tokens_kept": setting.tokens_kept,
            "tokens_total": setting.tokens_total,
            "dense_gmacs": report.dense_gmacs,
            "gmacs": report.gmacs,
            "macs_saving_pct": 100.0 * report.savings,
            "paper_top1": reported.get("top1"),
            "paper_flops_saving_pct": reported.get("flops_savings_pct"),
            "paper_time_saving_pct": reported.get("time_savings_pct"),
            "paper_source": reported.get("source"),
            "paper_note": reported.get("note"),
        }
        groups: dict[str, list[RunRecord]] = {}
        for r in mine:  # one cell per recipe: runs that differ in more than the seed never pool
            groups.setdefault(r.recipe, []).append(r)
        if not groups:
            rows.append({**base, "our_top1": None, "our_top1_sd": None, "our_runs": 0, "our_recipe": None,
                         "our_run_dirs": [], "our_macs_saving_pct": None})
        for recipe in sorted(groups, key=lambda k: names[k]):
            part = groups[recipe]
            saving = _mean([r.flops_savings for r in part])
            rows.append({
                **base,
                "our_top1": _mean([r.top1 for r in part]),
                "our_top1_sd": _sd([r.top1 for r in part]),
                "our_runs": len(part),
                "our_recipe": names[recipe],
                "our_recipe_values": json.loads(recipe),
                "our_run_dirs": sorted((_shown_path(r.path, roots) for r in part), key=_natural),
                "our_macs_saving_pct": None if saving is None else 100.0 * saving,
            })
    return rows


def _natural(text: str) -> list[Any]:
    """Sort key that puts ``trials/2`` before ``trials/15``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _shown_path(path: str, roots: Sequence[Path]) -> str:
    """A run directory as the user named it: under the ``--runs`` folder it was found in."""
    for root in roots:
        try:
            return str(root / Path(path).relative_to(root))
        except ValueError:
            continue
    return path


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table per model, the runs behind each of our cells, the recipes, the sources."""
    from .summary import markdown_table

    paper = paper_results()["paper"]
    out = [f"# {paper['title']} ({paper['venue']}, arXiv {paper['arxiv']}): sparsity tables", "",
           "Sparsity is the share of weights removed and density the share kept (density = 1 − sparsity); S²ViTE's "
           "head and MLP figures are densities. MACs saving: our analytic count of multiply-accumulates per image "
           "(the paper's 'FLOPs') against the dense model of the same row's table. Paper top-1: ImageNet-1k, as "
           "reported (— where the paper gives none). Ours: mean ± sample sd of our finished runs of that setting "
           "with one recipe (n runs, differing only in the seed; the runs are listed under each table), one row "
           "per recipe.", ""]
    sources: list[str] = []
    cells = [(r["label"], r["setting"]) for r in rows if r.get("our_recipe")]
    split = len(cells) != len(set(cells))  # some setting ran with more than one recipe: name them
    for label in dict.fromkeys(r["label"] for r in rows):
        part = [r for r in rows if r["label"] == label]
        dense = part[0]["dense_gmacs"]
        unit, factor = ("GMACs", 1.0) if dense >= 0.1 else ("MMACs", 1e3)
        body, runs_lines = [], []
        for r in part:
            mark = ""
            if r["paper_source"]:
                sources.append(f"{label}, {r['setting']}: {r['paper_source']}" + (f" ({r['paper_note']})" if r["paper_note"] else ""))
                mark = f" [{len(sources)}]"
            ours = "—"
            if r["our_runs"]:
                spread = f" ± {r['our_top1_sd']:.2f}" if r.get("our_top1_sd") is not None else ""
                ours = f"{_cell(r['our_top1'])}{spread} (n={r['our_runs']})"
                runs_lines.append(f"- {r['setting']}" + (f" [{r['our_recipe']}]" if split else "")
                                  + ": " + ", ".join(f"`{d}`" for d in r.get("our_run_dirs") or []))
            setting = r["setting"] + (f" [{r['our_recipe']}]" if split and r.get("our_recipe") else "")
            paper_saving = f" (paper: {r['paper_flops_saving_pct']:.2f})" if r["paper_flops_saving_pct"] is not None else ""
            body.append([setting, _cell(r["gmacs"] * factor, 3), f"{r['macs_saving_pct']:.2f}{paper_saving}",
                         _cell(r["paper_top1"]) + mark, ours])
        out += [f"## {label} (dense: {dense * factor:.3f} {unit})", "",
                markdown_table(["setting", unit, "MACs saving vs dense (%)", "paper top-1 (%)",
                                "our top-1 (%), mean ± sd (n)"], body), ""]
        if runs_lines:
            out += ["Runs in each of our cells:", ""] + runs_lines + [""]
    if split:
        differences = recipe_differences({r["our_recipe"]: r["our_recipe_values"] for r in rows if r.get("our_recipe")})
        out += ["## Recipes", "", "Runs pool only within one recipe (everything but the setting and the seed); "
                "the recipes here differ in:", ""]
        out += [f"- **{name}**: {differences[name] or 'nothing shown here'}"
                for name in sorted(differences, key=lambda n: int(n[1:]))] + [""]
    if sources:
        out += ["## Sources", ""] + [f"{i}. {s}" for i, s in enumerate(sources, 1)] + [""]
    out += [f"Paper: {paper['authors']}, *{paper['title']}*, {paper['venue']}; code {paper['code']}.", ""]
    return "\n".join(out)


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else ";".join(row[k]) if isinstance(row.get(k), list) else row[k])
                         for k in COLUMNS})
    return buffer.getvalue()
