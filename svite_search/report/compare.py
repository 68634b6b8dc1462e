"""Several studies side by side: their Pareto fronts overlaid, one hypervolume scale, the compute
each spent.

The hypervolume of every study is computed twice. On the pooled scale, against one reference
point and one ideal point taken from the completed trials of all the studies together (see
:mod:`.pareto`), so the numbers compare among the studies given: a larger share of the common
box is a better front. On the fixed scale (:func:`.pareto.fixed_bounds`: top-1 from 0 % to
100 %, MACs from the dense model's to none), which does not depend on the trials, so the numbers
also compare with a comparison run another day on other studies of the same model. The compute
spent is the trial-epochs the trials trained, the sum of their run times (trial time) and the
span from the first trial's start to the last trial's end (wall time).

``compare_studies([DIR, DIR, ...], OUT)`` writes into ``OUT``:

=================  ===================================================================
``compare.png``    every study's completed trials (faint) and its front (staircase)
``compare.html``   the same, interactive and self-contained
``compare.md``     the summary table, then one table per study's front
``fronts.csv``     the front trials of every study (a ``study`` column first)
=================  ===================================================================
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import UserInputError
from ._frame import Objective, objectives_of, settings_text, trials_frame
from ._study import load_study_dir
from .compute import compute_spent as _spent
from .pareto import fixed_bounds, hypervolume, normalisation, pareto_mask
from .plots import axis_label, dense_baseline, macs_unit, plot_axes

#: One colour per study, in the order given (matplotlib's tab10).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<")


def load_studies(study_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """``[{label, study_dir, spec, frame, objectives}]``; the studies must share their objectives."""
    if len(study_dirs) < 2:
        raise UserInputError("compare: give at least two study directories")
    loaded = []
    for directory in study_dirs:
        study, spec = load_study_dir(directory)
        objectives = objectives_of(study, spec)
        method = spec.get("method") if isinstance(spec.get("method"), str) else None
        frame = trials_frame(study.get_trials(deepcopy=False), objectives, default_method=method)
        frame["pareto"] = pareto_mask(frame, objectives).astype(bool) if len(frame) else pd.Series(dtype=bool)
        loaded.append({"label": study.study_name, "study_dir": str(directory), "spec": spec, "frame": frame,
                       "objectives": objectives})
    first = loaded[0]["objectives"]
    for item in loaded[1:]:
        if item["objectives"] != first:
            shown = lambda objs: ", ".join(f"{o.metric} ({o.direction})" for o in objs)  # noqa: E731
            raise UserInputError(f"{item['study_dir']}: objectives {shown(item['objectives'])} differ from "
                                 f"{loaded[0]['study_dir']}'s {shown(first)}: fronts would not compare")
    labels = [item["label"] for item in loaded]
    for item in loaded:  # two studies of one name: tell them apart by directory
        if labels.count(item["label"]) > 1:
            item["label"] = f"{item['label']} ({item['study_dir']})"
    return loaded


def _complete(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    done = frame[frame["state"] == "COMPLETE"]
    return done[np.all(np.isfinite(done[list(metrics)].to_numpy(dtype=float)), axis=1)]


def compute_spent(frame: pd.DataFrame, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trials run, the epochs they trained (in all, and in trials stopped early) and the time
    they took (trial time summed, and first start to last end)."""
    if frame.empty:
        return {"trials": 0, "trial_epochs": 0.0, "stopped": 0, "stopped_epochs": 0.0, "trial_time_s": 0.0,
                "wall_time_s": None}
    spent = _spent(frame, spec)
    stopped = spent["by_state"].get("PRUNED", {})
    starts = pd.to_datetime(frame["datetime_start"], errors="coerce").dropna()
    ends = pd.to_datetime(frame["datetime_complete"], errors="coerce").dropna()
    wall = (ends.max() - starts.min()).total_seconds() if len(starts) and len(ends) else None
    return {"trials": int(len(frame)), "trial_epochs": spent["trial_epochs"], "stopped": int(stopped.get("trials", 0)),
            "stopped_epochs": float(stopped.get("trial_epochs", 0.0)),
            "trial_time_s": float(pd.to_numeric(frame["duration_s"], errors="coerce").sum()), "wall_time_s": wall}


def comparison(studies: list[dict[str, Any]]) -> dict[str, Any]:
    """Per study: counts, front, hypervolume against the shared reference, compute spent."""
    objectives: list[Objective] = studies[0]["objectives"]
    metrics = [o.metric for o in objectives]
    maximize = [o.maximize for o in objectives]
    pooled = pd.concat([_complete(s["frame"], metrics)[metrics] for s in studies])
    reference = ideal = None
    if len(pooled):
        reference, ideal = normalisation(pooled.to_numpy(dtype=float), maximize)
    bounds = fixed_bounds(objectives, *[s["frame"] for s in studies if len(s["frame"])])
    rows = []
    for s in studies:
        frame = s["frame"]
        done = _complete(frame, metrics)
        front = done[done["pareto"]].sort_values("number") if len(done) else done
        hv = hypervolume(done[metrics].to_numpy(dtype=float), maximize, reference, ideal) \
            if reference is not None and len(done) else None
        rows.append({
            "study": s["label"], "study_dir": s["study_dir"],
            "complete": int(len(done)), "failed": int((frame["state"] == "FAIL").sum()) if len(frame) else 0,
            "front": [{"number": int(r["number"]), "variant": r["variant"], "settings": settings_text(r),
                       "values": {m: float(r[m]) for m in metrics}} for _, r in front.iterrows()],
            "hypervolume": hv,
            "hypervolume_fixed": hypervolume(done[metrics].to_numpy(dtype=float), maximize, bounds.reference,
                                             bounds.ideal) if bounds is not None and len(done) else None,
            **compute_spent(frame, s.get("spec")),
        })
    signs = np.where(np.asarray(maximize), -1.0, 1.0)
    return {
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in objectives],
        "reference_point": None if reference is None else dict(zip(metrics, (reference * signs).tolist())),
        "ideal_point": None if ideal is None else dict(zip(metrics, (ideal * signs).tolist())),
        "fixed_reference_point": None if bounds is None else bounds.points(objectives)["reference"],
        "fixed_ideal_point": None if bounds is None else bounds.points(objectives)["ideal"],
        "fixed_scale_fixed": None if bounds is None else bounds.all_fixed,
        "studies": rows,
    }


def _axes(studies: list[dict[str, Any]]) -> tuple[Objective, Objective, float, str | None]:
    x, y = plot_axes(studies[0]["objectives"])
    values = [v for s in studies for v in _complete(s["frame"], [x.metric, y.metric])[x.metric].tolist()]
    factor, unit = macs_unit(values) if x.metric == "gmacs" else (1.0, None)
    return x, y, factor, unit


def compare_png(studies: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x, y, factor, unit = _axes(studies)
    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=150)
    for i, s in enumerate(studies):
        colour, marker = COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
        done = _complete(s["frame"], [x.metric, y.metric])
        if done.empty:
            continue
        ax.scatter(done[x.metric] * factor, done[y.metric], s=18, c=colour, marker=marker, alpha=0.25, linewidths=0)
        front = done[done["pareto"]].sort_values([x.metric, y.metric], ascending=[True, y.maximize])
        ax.step(front[x.metric] * factor, front[y.metric], where="post", color=colour, lw=1.6, alpha=0.9)
        ax.scatter(front[x.metric] * factor, front[y.metric], s=46, c=colour, marker=marker, edgecolors="white",
                   linewidths=0.6, zorder=3, label=f"{s['label']}: front of {len(front)} ({len(done)} trials)")
        base = dense_baseline(s["frame"], x.metric, y.metric)
        if base is not None:
            ax.axhline(base["y"], color=colour, ls="--", lw=0.8, alpha=0.6)
    ax.set_xlabel(axis_label(x.metric, unit))
    ax.set_ylabel(axis_label(y.metric))
    ax.grid(True, alpha=0.25)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, 0.01, "Faint: every completed trial. Dashed: each study's dense baseline. "
             "MACs: analytic multiply-accumulates per image.", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def compare_html(studies: list[dict[str, Any]], path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    from .plots import write_html

    x, y, factor, unit = _axes(studies)
    fig = go.Figure()
    for i, s in enumerate(studies):
        colour = COLOURS[i % len(COLOURS)]
        done = _complete(s["frame"], [x.metric, y.metric])
        if done.empty:
            continue
        hover = [f"{s['label']} trial #{int(r['number'])} ({r['variant']})<br>{y.metric} = {r[y.metric]:.4g}<br>"
                 f"{x.metric} = {r[x.metric] * factor:.4g}{' ' + unit if unit else ''}<br>{settings_text(r) or '—'}"
                 for _, r in done.iterrows()]
        fig.add_trace(go.Scatter(x=done[x.metric] * factor, y=done[y.metric], mode="markers", legendgroup=s["label"],
                                 name=f"{s['label']}: all {len(done)} trials", hovertext=hover, hoverinfo="text",
                                 marker=dict(color=colour, size=7, opacity=0.35)))
        front = done[done["pareto"]].sort_values([x.metric, y.metric], ascending=[True, y.maximize])
        fig.add_trace(go.Scatter(x=front[x.metric] * factor, y=front[y.metric], mode="lines+markers+text",
                                 legendgroup=s["label"], name=f"{s['label']}: front ({len(front)})",
                                 line=dict(color=colour, shape="hv", width=2), marker=dict(color=colour, size=10),
                                 text=[f"#{int(n)}" for n in front["number"]], textposition="bottom right",
                                 textfont=dict(color=colour, size=9), hoverinfo="skip"))
    fig.update_layout(title=dict(text=title, font=dict(size=14)), xaxis_title=axis_label(x.metric, unit),
                      yaxis_title=axis_label(y.metric), template="plotly_white",
                      legend=dict(x=1.0, y=0.0, xanchor="right", yanchor="bottom"))
    return write_html(fig, path)


def compare_markdown(studies: list[dict[str, Any]], result: dict[str, Any], files: Sequence[str]) -> str:
    from .status import format_duration
    from .summary import markdown_table

    x, y, factor, unit = _axes(studies)
    lines = ["# Comparing " + ", ".join(f"`{s['label']}`" for s in studies), "", "![fronts](compare.png)", ""]
    ref = result["reference_point"]
    if ref:
        shown = ", ".join(f"{m} {v * (factor if m == 'gmacs' else 1.0):.4g}{' ' + unit if m == 'gmacs' and unit else ''}"
                          for m, v in ref.items())
        lines += [f"Hypervolume: the share of one box shared by all studies, from the reference point ({shown}: the "
                  "worst values of all their completed trials, pushed out by 10 % of the range) to the best values; "
                  "larger is a better front.", ""]
    fixed = result.get("fixed_reference_point")
    if fixed:
        shown = ", ".join(f"{m} {v * (factor if m == 'gmacs' else 1.0):.4g}{' ' + unit if m == 'gmacs' and unit else ''}"
                          for m, v in fixed.items())
        lines += [f"Hypervolume (fixed): the share of a box that does not depend on the trials, from ({shown}) to the "
                  "ideal (top-1 100 %, no MACs): it compares with studies outside this comparison too"
                  + ("." if result.get("fixed_scale_fixed") else
                     " only on the same reference, since one objective has no natural bound.")
                  + " Trial-epochs: the epochs the trials trained (stopped: those of trials stopped early).", ""]
    rows = []
    for r in result["studies"]:
        hv = f"{r['hypervolume']:.3f}" if r["hypervolume"] is not None else "—"
        hv_fixed = f"{r['hypervolume_fixed']:.4f}" if r.get("hypervolume_fixed") is not None else "—"
        epochs = f"{r['trial_epochs']:.0f}" + (f" ({r['stopped_epochs']:.0f} in {r['stopped']} stopped)" if r["stopped"] else "")
        rows.append([r["study"], r["complete"], r["failed"], len(r["front"]), hv, hv_fixed, epochs,
                     format_duration(r["trial_time_s"]), format_duration(r["wall_time_s"]), r["study_dir"]])
    lines += [markdown_table(["study", "complete", "failed", "front", "hypervolume (shared)", "hypervolume (fixed)",
                              "trial-epochs", "trial time", "wall time", "directory"], rows), ""]
    for s, r in zip(studies, result["studies"]):
        base = dense_baseline(s["frame"], x.metric, y.metric)
        headers = ["trial", "variant", "settings", y.metric, axis_label(x.metric, unit) if x.metric == "gmacs" else x.metric]
        if base is not None:
            headers.append("MACs saving vs its dense baseline" if x.metric == "gmacs" else f"{x.metric} saving")
        body = []
        for f in sorted(r["front"], key=lambda f: f["values"][x.metric]):
            row = [f"#{f['number']}", f["variant"], f["settings"] or "—", f"{f['values'][y.metric]:.2f}",
                   f"{f['values'][x.metric] * factor:.4g}"]
            if base is not None:
                row.append(f"{100 * (1 - f['values'][x.metric] / base['x']):.1f} %")
            body.append(row)
        lines += [f"## Front of `{s['label']}`", ""]
        if base is not None:
            lines += [f"Dense baseline: {y.metric} {base['y']:.2f} at {base['x'] * factor:.4g} {unit or x.metric}.", ""]
        lines += [markdown_table(headers, body) if body else "_No completed trial._", ""]
    lines += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(lines)


def compare_studies(study_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Write the comparison of ``study_dirs`` into ``out_dir``; returns :func:`comparison`'s dict
    with ``out_dir`` and ``files``. Each file is written beside its final name, then renamed."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: is a file, not a directory")
    studies = load_studies(study_dirs)
    if not any(len(_complete(s["frame"], [o.metric for o in s["objectives"]])) for s in studies):
        raise UserInputError("compare: none of the studies has a completed trial yet")
    result = comparison(studies)
    out.mkdir(parents=True, exist_ok=True)
    title = "Pareto fronts: " + " vs ".join(s["label"] for s in studies)
    files = ["compare.png", "compare.html", "fronts.csv", "compare.md"]

    def atomic(name: str, write: Any) -> None:
        tmp = out / f".{name}.{os.getpid()}.tmp{Path(name).suffix}"
        try:
            write(tmp)
            os.replace(tmp, out / name)
        finally:
            tmp.unlink(missing_ok=True)

    atomic("compare.png", lambda p: compare_png(studies, p, title))
    atomic("compare.html", lambda p: compare_html(studies, p, title))
    fronts = pd.concat([s["frame"][s["frame"]["pareto"]].assign(study=s["label"]) for s in studies if len(s["frame"])])
    fronts = fronts[["study"] + [c for c in fronts.columns if c != "study"]]
    atomic("fronts.csv", lambda p: fronts.to_csv(p, index=False))
    atomic("compare.md", lambda p: p.write_text(compare_markdown(studies, result, files)))
    return {**result, "out_dir": str(out), "files": files}
