"""``summary.md``: the report a person reads first.

Sections: the study's settings, the trials' outcome, the Pareto table, the best accuracy within
several compute budgets, the savings of each variant against the dense baseline, the compute
the study spent (trial-epochs and trial-hours, complete against stopped early), the
hypervolume (on the study's own scale and on a fixed one), the parameter importances, and, for toy-scale studies, a plain statement of what
the scale does and does not show.
"""
from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import yaml

from .._redact import mask_credentials
from ._frame import VARIANTS, Objective, repeat_mask, settings_text
from .plots import axis_label, dense_baseline, macs_unit, plot_axes

#: Compute budgets of the "best within a budget" table, as shares of the dense model's MACs.
BUDGETS: tuple[float, ...] = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2)
#: Accuracy loss (points) still counted as "matching dense" in the savings table.
TOLERANCE_POINTS = 1.0
DIGITS_IMAGES = 1797  # scikit-learn's embedded 8x8 digits


def escape(text: Any) -> str:
    """Text from a study (parameter values, error messages) made inert in Markdown: ``<``, ``>``
    and ``&`` as entities, so a value such as ``<img onerror=...>`` shows as text instead of
    becoming HTML in a viewer that renders it; one line."""
    return html.escape(" ".join(str(text).split()), quote=False)


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``, so nothing in it can close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned); cells are escaped (:func:`escape`)."""
    rows = [["" if c is None else escape(c).replace("|", "\\|") for c in row] for row in rows]
    align = []
    for i, _ in enumerate(headers):
        numeric = rows and all(_looks_numeric(r[i]) for r in rows if r[i] not in ("", "—"))
        align.append("---:" if numeric else ":---")
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace("%", "").replace("+", "").replace("−", "-").replace(",", ""))
        return True
    except ValueError:
        return False


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _signed(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    value = round(value, digits) + 0.0  # no "-0.00"
    return f"{value:+.{digits}f}".replace("-", "−")


def _get(spec: Mapping[str, Any], dotted: str) -> Any:
    node: Any = spec
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _describe(value: Any) -> str:
    """A spec value or search distribution in words, escaped (:func:`escape`)."""
    return escape(_describe_raw(value))


def _describe_raw(value: Any) -> str:
    if isinstance(value, Mapping):
        if "choices" in value:
            return "one of " + ", ".join(map(str, value["choices"]))
        if "low" in value and "high" in value:
            return f"{value['low']} to {value['high']}" + (" (log scale)" if value.get("log") else "")
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def settings_section(name: str, spec: Mapping[str, Any], objectives: Sequence[Objective]) -> list[str]:
    lines = ["## Study settings", ""]
    keys = [
        ("model", "model.name"), ("dataset", "data.dataset"), ("epochs", "train.epochs"),
        ("batch size (per process)", "data.batch_size"), ("learning rate", "train.lr"), ("method", "method"),
        ("sampler", "search.sampler"), ("trials", "search.n_trials"), ("sampler seed", "search.seed"),
        ("executor", "executor.kind"),
    ]
    for label, key in keys:
        value = _get(spec, key)
        if value is not None:
            lines.append(f"- **{label}**: {_describe(value)}")
    enqueued = _get(spec, "search.enqueue")
    if isinstance(enqueued, list) and enqueued:
        lines.append(f"- **run first**: {len(enqueued)} listed parameter sets (`search.enqueue`)")
    for section in ("data", "model", "train", "sparsity", "tokens"):
        node = spec.get(section)
        if isinstance(node, Mapping):
            searched = [f"`{k}` {_describe(v)}" for k, v in node.items() if isinstance(v, Mapping) or isinstance(v, list)]
            if searched:
                lines.append(f"- **{section} searched**: " + "; ".join(searched))
    lines.append("- **objectives**: " + ", ".join(f"{o.metric} ({o.direction})" for o in objectives))
    if spec:
        text = yaml.safe_dump(mask_credentials(dict(spec)), sort_keys=False).rstrip()
        fence = _fence(text)  # a code block shows its text as it is: no HTML inside it is rendered
        lines += ["", "<details><summary>the full study spec</summary>", "", f"{fence}yaml", text, fence, "",
                  "</details>"]
    return lines + [""]


def outcome_section(frame: pd.DataFrame) -> list[str]:
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    repeats = int(repeat_mask(frame).sum())
    counts["PRUNED"] = counts.get("PRUNED", 0) - repeats
    parts = [f"{counts.get(s, 0)} {s.lower()}" for s in ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING") if counts.get(s)]
    if repeats:
        parts.append(f"{repeats} repeats skipped untrained (search.repeats: skip)")
    total = pd.to_numeric(frame.get("duration_s"), errors="coerce").sum() if len(frame) else 0.0
    lines = ["## Trials", "", f"{len(frame)} trials: {', '.join(parts) or 'none'}; "
             f"{total / 60:.1f} min of trial time in all (trials.csv has every trial)."]
    failed = frame[frame["state"] == "FAIL"]
    for _, row in failed.iterrows():
        lines.append(f"- trial #{int(row['number'])} failed: {escape(row.get('error') or 'no reason recorded')}")
    return lines + [""]


def pareto_section(frame: pd.DataFrame, objectives: Sequence[Objective], baseline: dict[str, Any] | None,
                   x: Objective, y: Objective) -> list[str]:
    front = frame[frame["pareto"]].sort_values(x.metric)
    factor, unit = macs_unit(frame[x.metric].dropna().tolist()) if x.metric == "gmacs" else (1.0, x.metric)
    headers = ["trial", "variant", "settings", *[axis_label(o.metric, unit) if o.metric == "gmacs" else o.metric for o in objectives]]
    if baseline is not None:
        headers += ["MACs saving vs dense" if x.metric == "gmacs" else f"{x.metric} saving", f"Δ {y.metric} vs dense (points)"]
    rows = []
    for _, r in front.iterrows():
        row = [f"#{int(r['number'])}", r["variant"], settings_text(r) or "—"]
        row += [_fmt(r[o.metric] * (factor if o.metric == "gmacs" else 1.0), 4 if o.metric == "gmacs" else 2) for o in objectives]
        if baseline is not None:
            row += [f"{100 * (1 - r[x.metric] / baseline['x']):.1f} %", _signed(r[y.metric] - baseline["y"])]
        rows.append(row)
    lines = ["## Pareto front", "", "Trials no other trial beats on every objective at once (pareto.csv, pareto.png, "
             "pareto.html)."]
    if seed_columns(frame):
        lines.append("These are single trials, and a lucky seed can put one here: compare settings by their means "
                     "over seeds (next section).")
    if baseline is not None:
        who = ", ".join(f"#{n}" for n in baseline["numbers"])
        source = f"mean of trials {who}" if baseline["n"] > 1 else f"trial {who}"
        lines.append(f"Dense baseline: {y.metric} {baseline['y']:.2f}, {baseline['x'] * factor:.4g} {unit} ({source}).")
    return lines + ["", markdown_table(headers, rows) if rows else "_No completed trial yet._", ""]


def budget_section(frame: pd.DataFrame, x: Objective, y: Objective, dense_cost: float | None) -> list[str]:
    done = frame[(frame["state"] == "COMPLETE")].dropna(subset=[x.metric, y.metric])
    if done.empty or not dense_cost:
        return []
    factor, unit = macs_unit(done[x.metric].tolist()) if x.metric == "gmacs" else (1.0, x.metric)
    rows = []
    for share in BUDGETS:
        limit = share * dense_cost * (1 + 1e-9)
        fits = done[done[x.metric] <= limit]
        if fits.empty:
            rows.append([f"{100 * share:.0f} %", _fmt(share * dense_cost * factor, 4), "—", "—", "—"])
            continue
        best = fits.loc[fits[y.metric].idxmax() if y.maximize else fits[y.metric].idxmin()]
        rows.append([f"{100 * share:.0f} %", _fmt(share * dense_cost * factor, 4), _fmt(float(best[y.metric])),
                     f"#{int(best['number'])} {best['variant']}", settings_text(best) or "—"])
    headers = ["budget (share of dense MACs)", f"budget ({unit})", f"best {y.metric}", "trial", "settings"]
    return ["## Best accuracy within a compute budget", "", markdown_table(headers, rows), ""]


def savings_section(frame: pd.DataFrame, x: Objective, y: Objective, baseline: dict[str, Any] | None) -> list[str]:
    if baseline is None:
        return ["## Savings vs the dense baseline", "", "_No completed dense trial: nothing to compare with._", ""]
    done = frame[(frame["state"] == "COMPLETE")].dropna(subset=[x.metric, y.metric])
    rows = []
    variants = [v for v in VARIANTS if v in set(done["variant"]) and v != "dense"]
    for variant in variants + sorted(set(done["variant"]) - set(VARIANTS)):
        part = done[done["variant"] == variant]
        best = part.loc[part[y.metric].idxmax()]
        close = part[part[y.metric] >= baseline["y"] - TOLERANCE_POINTS]
        cheapest = close.loc[close[x.metric].idxmin()] if len(close) else None
        rows.append([
            variant, len(part), f"{_fmt(float(best[y.metric]))} (#{int(best['number'])})",
            _signed(float(best[y.metric]) - baseline["y"]), f"{100 * (1 - best[x.metric] / baseline['x']):.1f} %",
            f"{100 * (1 - cheapest[x.metric] / baseline['x']):.1f} % (#{int(cheapest['number'])})" if cheapest is not None else "—",
        ])
    headers = ["variant", "trials", f"best {y.metric}", "Δ vs dense (points)", "its MACs saving",
               f"largest MACs saving within {TOLERANCE_POINTS:g} point of dense"]
    return ["## Savings vs the dense baseline", "",
            f"Dense: {y.metric} {baseline['y']:.2f}. MACs are analytic multiply-accumulates per image (the paper's "
            "'FLOPs'); unstructured sparsity saves MACs only on hardware or kernels that skip zeros.", "",
            markdown_table(headers, rows) if rows else "_No sparse trial completed._", ""]


def seed_columns(frame: pd.DataFrame) -> list[str]:
    """The sampled seed parameters that take more than one value (``params.train.seed``)."""
    return [c for c in frame.columns if c.startswith("params.") and c.endswith("seed") and frame[c].nunique() > 1]


def seed_groups(frame: pd.DataFrame, x: Objective, y: Objective) -> list[pd.DataFrame]:
    """Completed trials grouped by everything they were given except the seed."""
    seeds = seed_columns(frame)
    done = frame[(frame["state"] == "COMPLETE")].dropna(subset=[x.metric, y.metric])
    if not seeds or done.empty:
        return []
    keys = ["variant"] + [c for c in frame.columns if c.startswith("params.") and c not in seeds]
    grouped = done.assign(**{k: done[k].astype(str) for k in keys}).groupby(keys, sort=False, dropna=False)
    return [done.loc[part.index] for _, part in grouped]


def seeds_section(frame: pd.DataFrame, x: Objective, y: Objective, baseline: dict[str, Any] | None) -> list[str]:
    """Each setting's mean and spread over seeds, when the study varies a seed: single trials of
    a small task differ by noise, the means are what compare."""
    seeds = seed_columns(frame)
    groups = seed_groups(frame, x, y)
    if not groups:
        return []
    done = pd.concat(groups)
    factor, unit = macs_unit(done[x.metric].tolist()) if x.metric == "gmacs" else (1.0, x.metric)
    rows = []
    for part in groups:
        first = part.iloc[0]
        mean, spread = float(part[y.metric].mean()), float(part[y.metric].std(ddof=1)) if len(part) > 1 else math.nan
        cost = float(part[x.metric].mean())
        row = [first["variant"], settings_text(first, skip=["method", *(c[len("params."):] for c in seeds)]) or "—", len(part),
               f"{mean:.2f} ± {spread:.2f}" if math.isfinite(spread) else f"{mean:.2f}", _fmt(cost * factor, 4)]
        if baseline is not None:
            row += [f"{100 * (1 - cost / baseline['x']):.1f} %", _signed(mean - baseline["y"])]
        rows.append((cost, row))
    headers = ["variant", "settings", "seeds", f"{y.metric} mean ± sd", f"{unit}"]
    if baseline is not None:
        headers += ["MACs saving vs dense", "Δ vs dense mean (points)"]
    body = [r for _, r in sorted(rows, key=lambda item: -item[0])]
    return ["## Mean over seeds", "", f"Each setting over the seeds it ran with ({', '.join(c[len('params.'):] for c in seeds)}); "
            "the spread (sample standard deviation) is the noise floor single trials above sit in.", "",
            markdown_table(headers, body), ""]


def compute_section(spent: Mapping[str, Any] | None) -> list[str]:
    """Trial-epochs and trial-hours spent, complete against stopped early (and failed)."""
    if not spent or not spent.get("by_state"):
        return []
    names = {"COMPLETE": "complete", "PRUNED": "stopped early (pruned)", "REPEAT": "repeats skipped untrained",
             "FAIL": "failed", "RUNNING": "still running"}
    total_epochs, total_hours = float(spent["trial_epochs"]), float(spent["trial_hours"])
    rows = []
    for state, part in spent["by_state"].items():
        share = f"{100 * part['trial_epochs'] / total_epochs:.0f} %" if total_epochs else "—"
        mean = part["trial_epochs"] / part["trials"] if part["trials"] else math.nan
        rows.append([names.get(state, state.lower()), part["trials"], _fmt(part["trial_epochs"], 0), share,
                     _fmt(mean, 1), _fmt(part["trial_hours"], 3)])
    rows.append(["all", sum(p["trials"] for p in spent["by_state"].values()), _fmt(total_epochs, 0),
                 "100 %" if total_epochs else "—", "", _fmt(total_hours, 3)])
    lines = ["## Compute spent", "",
             f"{total_epochs:.0f} trial-epochs and {total_hours:.3g} trial-hours in all (a trial's epochs are the ones "
             "it trained; its hours, its run time in the study storage). compute.csv has the running totals after "
             "each finished trial, with the hypervolume they bought (hypervolume.png, right).", "",
             markdown_table(["trials", "count", "trial-epochs", "share of epochs", "epochs per trial",
                             "trial-hours"], rows), ""]
    stopped = spent["by_state"].get("PRUNED")
    complete = spent["by_state"].get("COMPLETE")
    if stopped and complete and complete["trials"]:
        full = complete["trial_epochs"] / complete["trials"]
        saved = stopped["trials"] * full - stopped["trial_epochs"]
        if full > 0 and total_epochs + saved > 0:
            lines += [f"Stopping {stopped['trials']} trial(s) early saved about {saved:.0f} trial-epochs "
                      f"({100 * saved / (total_epochs + saved):.0f} % of what running them to the end would have cost).",
                      ""]
    return lines


def hypervolume_section(history: pd.DataFrame, bounds: Mapping[str, Any] | None = None,
                        compute: pd.DataFrame | None = None) -> list[str]:
    if history.empty:
        return []
    final = float(history["hypervolume"].iloc[-1])
    improved = history[history["hypervolume"] >= final - 1e-12]["number"].iloc[0]
    lines = ["## Hypervolume", "",
             f"{final:.3f} of the normalised objective box after {len(history)} completed trials, last improved by trial "
             f"#{int(improved)} (hypervolume.csv, hypervolume.png). Each objective is scaled to [0, 1] between the worst "
             "value seen (pushed out by 10 % of the range) and the best, so the figure compares trials of this study, "
             "not studies with each other (`svite-search compare` puts several studies on one scale)."]
    fixed = history["hypervolume_fixed"] if "hypervolume_fixed" in history else None
    if bounds is not None and fixed is not None and fixed.notna().any():
        ref = ", ".join(f"{m} {_fmt_point(m, v)}" for m, v in bounds["reference"].items())
        ideal = ", ".join(f"{m} {_fmt_point(m, v)}" for m, v in bounds["ideal"].items())
        lines += ["", f"On the fixed scale, from the reference point ({ref}) to the ideal ({ideal}): "
                  f"{float(fixed.iloc[-1]):.4f}. That box does not depend on the trials (accuracy from 0 % to 100 %, "
                  "MACs from the dense model's to none), so this figure compares with other studies of the same model."]
        if not all(bounds.get("fixed", [])):
            lines.append("One objective has no natural bound: its reference is the dense baseline's value, or the "
                         "worst value seen, so compare this figure only with studies on the same reference.")
        if compute is not None and len(compute):
            target = 0.95 * float(fixed.iloc[-1])
            reached = compute[compute["hypervolume_fixed"] >= target - 1e-12]
            if len(reached) and float(compute["trial_epochs"].iloc[-1]) > 0:
                at = float(reached["trial_epochs"].iloc[0])
                lines += ["", f"95 % of the final fixed-scale hypervolume was reached after {at:.0f} of "
                          f"{float(compute['trial_epochs'].iloc[-1]):.0f} trial-epochs "
                          f"({100 * at / float(compute['trial_epochs'].iloc[-1]):.0f} %)."]
    return lines + [""]


def _fmt_point(metric: str, value: float) -> str:
    if metric == "gmacs":
        if value == 0:
            return "0"
        factor, unit = macs_unit([value])
        return f"{value * factor:.4g} {unit}"
    return f"{value:.4g}" + (" %" if metric.startswith("top") else "")


def importance_section(importances: pd.DataFrame, reason: str | None, top: int = 5) -> list[str]:
    lines = ["## Parameter importances", ""]
    if importances.empty:
        return lines + [f"_Not computed: {reason or 'no data'}._", ""]
    for objective, part in importances.groupby("objective", sort=False):
        best = part.sort_values("importance", ascending=False).head(top)
        lines.append(f"- **{objective}**: " + ", ".join(f"`{r.param}` {r.importance:.2f}" for r in best.itertuples()))
    return lines + ["", "Optuna's importance evaluator (importances.csv); with few trials, read these as hints.", ""]


def _observed_at_scale(frame: pd.DataFrame) -> str:
    """One sentence on what this run measured, in terms of the seed-to-seed noise."""
    x, y = Objective("gmacs", "minimize"), Objective("top1", "maximize")
    if not {"gmacs", "top1"} <= set(frame.columns):
        return ""
    groups = seed_groups(frame, x, y)
    dense = [g for g in groups if g["variant"].iloc[0] == "dense"]
    if not groups or not dense:
        return ""
    spreads = [float(g["top1"].max() - g["top1"].min()) for g in groups if len(g) > 1]
    dense_mean = float(dense[0]["top1"].mean())
    noise = max(spreads) if spreads else 0.0
    sparse = [g for g in groups if g["variant"].iloc[0] != "dense"]
    close = [g for g in sparse if float(g["top1"].mean()) >= dense_mean - noise / 2]
    text = (f"Measured here: the same setting moves by up to {noise:.2f} points from one seed to the other "
            f"(median {sorted(spreads)[len(spreads) // 2]:.2f}). {len(close)} of {len(sparse)} sparse settings average "
            f"within {noise / 2:.2f} points (half that spread) of the dense mean, {dense_mean:.2f}")
    if close:
        best = min(close, key=lambda g: float(g["gmacs"].mean()))
        saving = 100 * (1 - float(best["gmacs"].mean()) / float(dense[0]["gmacs"].mean()))
        text += (f"; the cheapest of them, {best['variant'].iloc[0]} "
                 f"({escape(settings_text(best.iloc[0], skip=['method', *(c[len('params.'):] for c in seed_columns(frame))]))}), "
                 f"saves {saving:.1f} % of the MACs")
    return text + "."


def scale_note(spec: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
    """What a toy-scale study (embedded digits, synthetic data, tiny presets) shows and does not."""
    dataset = str(_get(spec, "data.dataset") or "")
    model = str(_get(spec, "model.name") or "")
    if dataset not in ("digits", "synthetic") and not model.startswith(("vit_digits", "vit_micro")):
        return []
    epochs = _get(spec, "train.epochs")
    lines = ["## What this toy scale shows, and what it does not", ""]
    if dataset == "digits":
        val_fraction = float(_get(spec, "data.val_fraction") or 0.2)
        n_val = math.ceil(DIGITS_IMAGES * val_fraction)
        lines.append(
            f"This study trains `{model or 'a preset'}` on scikit-learn's 8×8 digits ({DIGITS_IMAGES - n_val} training "
            f"and {n_val} validation images{f', {epochs} epochs' if epochs else ''}, CPU). One validation image is "
            f"{100 / n_val:.2f} accuracy points, so differences of a point or two between trials are within noise."
        )
    else:
        lines.append(f"This study trains `{model or 'a preset'}` on `{dataset}` data at a size meant for a CPU.")
    observed = _observed_at_scale(frame)
    if observed:
        lines += ["", observed]
    lines += [
        "",
        "**It shows** that every method and setting of the grid runs end to end through the same code the ImageNet "
        "studies use (ERK weight masks with prune-and-grow, head and neuron budgets, the token selector, the MACs "
        "accounting), that the MACs savings are exact for this model's shapes, and how the report reads.",
        "",
        "**It does not show** the paper's accuracies or whether sparse training is a 'free lunch' at scale: the model is "
        "tiny, the task nearly solved, and the training short. Its MACs savings are not DeiT's either, because the "
        "patch embedding, classifier and attention take different shares of a 4-block, 17-token model than of DeiT on "
        "197 tokens (`svite-search paper-table` gives DeiT's). The studies in `studies/paper/` are the reproduction; "
        "they need ImageNet and a GPU cluster.",
        "",
    ]
    return lines


def summary_markdown(*, name: str, spec: Mapping[str, Any], frame: pd.DataFrame, objectives: Sequence[Objective],
                     history: pd.DataFrame, importances: pd.DataFrame, importance_reason: str | None,
                     files: Sequence[str], generated: str = "", spent: Mapping[str, Any] | None = None,
                     compute: pd.DataFrame | None = None, bounds: Mapping[str, Any] | None = None) -> str:
    """The whole ``summary.md``."""
    lines = [f"# Study `{name}`", ""]
    if generated:
        lines += [generated, ""]
    description = spec.get("description") if isinstance(spec, Mapping) else None
    if description:
        lines += [str(description).strip(), ""]
    baseline = None
    x = y = None
    if len(objectives) >= 2:
        x, y = plot_axes(objectives)
        baseline = dense_baseline(frame, x.metric, y.metric)
    if any(f.endswith("pareto.png") for f in files):
        lines += ["![Pareto front](pareto.png)", ""]
    lines += settings_section(name, spec, objectives)
    lines += outcome_section(frame)
    if x is not None and y is not None:
        lines += pareto_section(frame, objectives, baseline, x, y)
        dense_cost = baseline["x"] if baseline else None
        if dense_cost is None and x.metric == "gmacs" and "dense_gmacs" in frame:
            values = pd.to_numeric(frame["dense_gmacs"], errors="coerce").dropna()
            dense_cost = float(values.median()) if len(values) else None
        lines += seeds_section(frame, x, y, baseline)
        lines += budget_section(frame, x, y, dense_cost)
        lines += savings_section(frame, x, y, baseline)
    lines += compute_section(spent)
    lines += hypervolume_section(history, bounds, compute)
    lines += importance_section(importances, importance_reason)
    lines += scale_note(spec, frame)
    lines += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(lines) + "\n"
