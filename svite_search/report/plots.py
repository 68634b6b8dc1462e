"""The report's figures: the Pareto front as a PNG (matplotlib) and as interactive HTML (plotly),
and the hypervolume history.

The front plot puts compute on x (the first minimised objective, MACs per image in a unit that
suits the model: GMACs for DeiT, MMACs or kMACs for the toy models) and accuracy on y (the first
maximised objective). Every completed trial is a point coloured by variant; the non-dominated
ones are ringed and joined by the front's staircase; the dense baseline is a star with a dashed
line at its accuracy, and the top axis reads the MACs saving against it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ._frame import VARIANTS, Objective, settings_text

STYLE: dict[str, tuple[str, str]] = {  # variant -> (colour, marker)
    "dense": ("#222222", "*"),
    "dense+tokens": ("#7f7f7f", "v"),
    "SViTE": ("#1f77b4", "o"),
    "SViTE+": ("#17becf", "D"),
    "S²ViTE": ("#ff7f0e", "s"),
    "S²ViTE+": ("#d62728", "P"),
}
LABELS = {
    "top1": "top-1 accuracy (%)",
    "top1_best": "best top-1 accuracy (%)",
    "top5": "top-5 accuracy (%)",
    "density": "weight density (share of weights kept)",
    "params_nonzero": "non-zero parameters",
    "wall_s": "training time (s)",
}


def plot_axes(objectives: Sequence[Objective]) -> tuple[Objective, Objective]:
    """(x, y): the first minimised objective against the first maximised one (else the first two)."""
    lower = [o for o in objectives if not o.maximize]
    upper = [o for o in objectives if o.maximize]
    if lower and upper:
        return lower[0], upper[0]
    if len(objectives) >= 2:
        return objectives[1], objectives[0]
    raise ValueError("a Pareto plot needs two objectives")


def macs_unit(gmacs_values: Sequence[float]) -> tuple[float, str]:
    """(factor from GMACs, unit name) so that the largest value reads between 0.1 and 1000."""
    finite = [abs(v) for v in gmacs_values if v is not None and math.isfinite(v)]
    peak = max(finite) if finite else 1.0
    if peak >= 0.1:
        return 1.0, "GMACs"
    if peak >= 1e-4:
        return 1e3, "MMACs"
    return 1e6, "kMACs"


def axis_label(metric: str, unit: str | None = None) -> str:
    if metric == "gmacs":
        return f"compute per image ({unit or 'GMACs'}, multiply-accumulates)"
    return LABELS.get(metric, metric)


def dense_baseline(frame: pd.DataFrame, x: str, y: str) -> dict[str, Any] | None:
    """Mean (x, y) of the completed dense trials, or ``None`` without one."""
    dense = frame[(frame["state"] == "COMPLETE") & (frame["variant"] == "dense")]
    dense = dense[np.isfinite(dense[x].astype(float)) & np.isfinite(dense[y].astype(float))]
    if dense.empty:
        return None
    return {"x": float(dense[x].mean()), "y": float(dense[y].mean()), "n": int(len(dense)),
            "numbers": [int(n) for n in dense["number"]]}


def _dense_cost(frame: pd.DataFrame, x: str, baseline: dict[str, Any] | None) -> float | None:
    if baseline is not None:
        return baseline["x"]
    if x == "gmacs" and "dense_gmacs" in frame:
        values = pd.to_numeric(frame["dense_gmacs"], errors="coerce").dropna()
        if len(values):
            return float(values.median())
    return None


def _front_points(frame: pd.DataFrame, x: str, y: str, y_max: bool) -> pd.DataFrame:
    front = frame[frame["pareto"]].sort_values([x, y], ascending=[True, y_max])
    return front


def pareto_png(frame: pd.DataFrame, objectives: Sequence[Objective], path: str | Path, *, title: str = "",
               note: str = "") -> Path:
    """Write the front plot to ``path`` (PNG, 150 dpi) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x_obj, y_obj = plot_axes(objectives)
    x, y = x_obj.metric, y_obj.metric
    done = frame[(frame["state"] == "COMPLETE")].copy()
    done = done[np.isfinite(done[x].astype(float)) & np.isfinite(done[y].astype(float))]
    factor, unit = macs_unit(done[x].tolist()) if x == "gmacs" else (1.0, None)
    baseline = dense_baseline(frame, x, y)
    dense_cost = _dense_cost(frame, x, baseline)

    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=150)
    for variant in [v for v in VARIANTS if v in set(done["variant"])] + sorted(set(done["variant"]) - set(VARIANTS)):
        part = done[done["variant"] == variant]
        colour, marker = STYLE.get(variant, ("#9467bd", "o"))
        size = 140 if variant == "dense" else 42
        ax.scatter(part[x] * factor, part[y], s=size, c=colour, marker=marker, alpha=0.85, linewidths=0.5,
                   edgecolors="white", label=f"{variant} ({len(part)})", zorder=3)
    if "feasible" in done and not done["feasible"].astype(bool).all():
        bad = done[~done["feasible"].astype(bool)]
        ax.scatter(bad[x] * factor, bad[y], s=60, c="#555555", marker="x", linewidths=1.2, zorder=5,
                   label=f"violates a constraint ({len(bad)})")
    front = _front_points(done, x, y, y_obj.maximize)
    if len(front):
        ax.step(front[x] * factor, front[y], where="post", color="#2ca02c", lw=1.6, alpha=0.9, zorder=2,
                label=f"Pareto front ({len(front)})")
        ax.scatter(front[x] * factor, front[y], s=150, facecolors="none", edgecolors="#2ca02c", linewidths=1.8, zorder=4)
        for _, row in front.iterrows():
            ax.annotate(f"#{int(row['number'])}", (row[x] * factor, row[y]), textcoords="offset points",
                        xytext=(6, -11), fontsize=7, color="#2ca02c")
    if baseline is not None:  # in the legend: a label on the plot would sit on the front's best points
        label = "dense baseline" + (f", mean of {baseline['n']}" if baseline["n"] > 1 else "")
        ax.axhline(baseline["y"], color="#222222", ls="--", lw=0.9, alpha=0.7, zorder=1,
                   label=f"{label}: {baseline['y']:.2f}")
    if dense_cost:
        ax.axvline(dense_cost * factor, color="#222222", ls=":", lw=0.9, alpha=0.6, zorder=1)
        top = ax.secondary_xaxis(
            "top",
            functions=(lambda v: 100.0 * (1.0 - v / (dense_cost * factor)), lambda s: (1.0 - s / 100.0) * dense_cost * factor),
        )
        top.set_xlabel("MACs saving vs dense (%)" if x == "gmacs" else f"saving vs dense {x} (%)")
    ax.set_xlabel(axis_label(x, unit))
    ax.set_ylabel(axis_label(y))
    ax.grid(True, alpha=0.25)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def saving_ticks(dense_cost: float, lo: float, hi: float, count: int = 6) -> tuple[list[float], list[str]]:
    """Positions (in plotted x units) and labels of round MACs-saving ticks between ``lo`` and ``hi``:
    the top axis of the front plot, which reads the saving against the dense model."""
    if not dense_cost or not math.isfinite(dense_cost) or hi <= lo:
        return [], []
    s_lo, s_hi = 100.0 * (1.0 - hi / dense_cost), 100.0 * (1.0 - lo / dense_cost)
    span = s_hi - s_lo
    step = next(st for st in (1, 2, 5, 10, 20, 25, 50, 100) if span / st <= count)
    first = math.ceil(s_lo / step) * step
    savings = [first + i * step for i in range(int((s_hi - first) // step) + 1)]
    return [(1.0 - v / 100.0) * dense_cost for v in savings], [f"{v:g} %" for v in savings]


def pareto_figure(frame: pd.DataFrame, objectives: Sequence[Objective], *, title: str = "") -> Any:
    """The interactive front plot as a ``plotly.graph_objects.Figure``: the PNG's content (points by
    variant, the front ringed, labelled and joined, the dense baseline, the top axis of MACs
    saving) with each trial's parameters on hover."""
    import plotly.graph_objects as go

    x_obj, y_obj = plot_axes(objectives)
    x, y = x_obj.metric, y_obj.metric
    done = frame[(frame["state"] == "COMPLETE")].copy()
    done = done[np.isfinite(done[x].astype(float)) & np.isfinite(done[y].astype(float))]
    factor, unit = macs_unit(done[x].tolist()) if x == "gmacs" else (1.0, None)
    baseline = dense_baseline(frame, x, y)
    dense_cost = _dense_cost(frame, x, baseline)
    fig = go.Figure()
    for variant in [v for v in VARIANTS if v in set(done["variant"])] + sorted(set(done["variant"]) - set(VARIANTS)):
        part = done[done["variant"] == variant]
        colour, _ = STYLE.get(variant, ("#9467bd", "o"))
        shown = ["number", "pareto", x, y, *(c for c in part.columns if str(c).startswith("params."))]
        hover = [  # plain records, not a Series per row: thousands of points hover in well under a second
            f"trial #{int(r['number'])} ({variant}){' · Pareto' if r['pareto'] else ''}<br>"
            f"{y} = {r[y]:.4g}<br>{x} = {r[x] * factor:.4g}{' ' + unit if unit else ''}"
            + (f" (saving {100 * (1 - r[x] / dense_cost):.1f} % vs dense)" if dense_cost else "")
            + f"<br>{settings_text(r) or 'no sampled parameters'}"
            for r in part[shown].to_dict("records")
        ]
        fig.add_trace(go.Scatter(
            x=part[x] * factor, y=part[y], mode="markers", name=f"{variant} ({len(part)})",
            marker=dict(color=colour, size=16 if variant == "dense" else 9,
                        symbol=_PLOTLY_SYMBOL.get(STYLE.get(variant, ("", "o"))[1], "circle"),
                        line=dict(width=0.5, color="white")),
            hovertext=hover, hoverinfo="text",
        ))
    if "feasible" in done and not done["feasible"].astype(bool).all():
        bad = done[~done["feasible"].astype(bool)]
        fig.add_trace(go.Scatter(x=bad[x] * factor, y=bad[y], mode="markers", name=f"violates a constraint ({len(bad)})",
                                 marker=dict(symbol="x-thin", size=11, line=dict(width=2, color="#555555")),
                                 hoverinfo="skip"))
    front = _front_points(done, x, y, y_obj.maximize)
    if len(front):
        fig.add_trace(go.Scatter(
            x=front[x] * factor, y=front[y], mode="lines+markers+text", name=f"Pareto front ({len(front)})",
            line=dict(color="#2ca02c", shape="hv", width=2),
            marker=dict(size=17, color="rgba(0,0,0,0)", line=dict(width=2, color="#2ca02c")),
            text=[f"#{int(n)}" for n in front["number"]], textposition="bottom right",
            textfont=dict(color="#2ca02c", size=10), hoverinfo="skip",
        ))
    if baseline is not None:
        label = "dense baseline" + (f", mean of {baseline['n']}" if baseline["n"] > 1 else "")
        fig.add_hline(y=baseline["y"], line_dash="dash", line_color="#222222", line_width=1,
                      annotation_text=f"{label}: {baseline['y']:.2f}", annotation_position="top left")
    layout: dict[str, Any] = dict(
        title=dict(text=title, font=dict(size=14)), xaxis_title=axis_label(x, unit), yaxis_title=axis_label(y),
        template="plotly_white", legend=dict(x=1.0, y=0.0, xanchor="right", yanchor="bottom"),
        margin=dict(t=110),
    )
    if dense_cost:
        fig.add_vline(x=dense_cost * factor, line_dash="dot", line_color="#222222", line_width=1)
        xs = list(done[x] * factor) + [dense_cost * factor]
        pad = 0.05 * (max(xs) - min(xs) or max(xs) or 1.0)
        lo, hi = min(xs) - pad, max(xs) + pad
        ticks, labels = saving_ticks(dense_cost * factor, lo, hi)
        layout["xaxis"] = dict(range=[lo, hi])
        layout["xaxis2"] = dict(range=[lo, hi], overlaying="x", side="top", tickvals=ticks, ticktext=labels,
                                showgrid=False, title=dict(text="MACs saving vs dense (%)" if x == "gmacs"
                                                           else f"saving vs dense {x} (%)"))
        # an invisible trace on the top axis, so plotly draws it
        fig.add_trace(go.Scatter(x=[lo, hi], y=[None, None], xaxis="x2", showlegend=False, hoverinfo="skip",
                                 mode="markers", marker=dict(opacity=0)))
    fig.update_layout(**layout)
    return fig


#: matplotlib marker -> plotly symbol, so both figures draw a variant alike.
_PLOTLY_SYMBOL = {"*": "star", "v": "triangle-down", "o": "circle", "D": "diamond", "s": "square", "P": "cross"}


def write_html(fig: Any, path: str | Path) -> Path:
    """Write a plotly figure as one self-contained page: plotly.js is inlined, so the page
    renders offline (air-gapped clusters, a copied report) and fetches nothing."""
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return path


def pareto_html(frame: pd.DataFrame, objectives: Sequence[Objective], path: str | Path, *, title: str = "") -> Path:
    """Write the interactive front plot (see :func:`pareto_figure`) as a self-contained page."""
    return write_html(pareto_figure(frame, objectives, title=title), path)


def hypervolume_png(history: pd.DataFrame, path: str | Path, *, title: str = "",
                    compute: pd.DataFrame | None = None) -> Path:
    """Write the hypervolume curves: against the trial number (left) and, given ``compute``
    (:func:`~svite_search.report.compute.compute_history`), against the trial-epochs spent
    (right), where a study that stops weak trials early shows its saving. Solid: the study's own
    scale; dashed: the fixed scale, which compares across studies."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with_compute = compute is not None and len(compute) > 0
    fig, axes = plt.subplots(1, 2 if with_compute else 1, figsize=(11.0 if with_compute else 6.4, 3.6), dpi=150,
                             squeeze=False)
    fixed = "hypervolume_fixed" in history and history["hypervolume_fixed"].notna().any()
    ax = axes[0][0]
    if len(history):
        ax.step(history["number"], history["hypervolume"], where="post", color="#2ca02c", lw=1.6,
                label="study's own scale")
        ax.scatter(history["number"], history["hypervolume"], s=12, color="#2ca02c")
        if fixed:
            ax.step(history["number"], history["hypervolume_fixed"], where="post", color="#1f77b4", lw=1.4,
                    ls="--", label="fixed scale")
    ax.set_xlabel("trial number (completed trials, in order)")
    ax.set_ylabel("hypervolume (share of the\nobjective box)")
    if with_compute:
        ax2 = axes[0][1]
        ax2.step(compute["trial_epochs"], compute["hypervolume"], where="post", color="#2ca02c", lw=1.6,
                 label="study's own scale")
        if compute["hypervolume_fixed"].notna().any():
            ax2.step(compute["trial_epochs"], compute["hypervolume_fixed"], where="post", color="#1f77b4", lw=1.4,
                     ls="--", label="fixed scale")
        stopped = compute[compute["state"] == "PRUNED"]
        if len(stopped):
            ax2.scatter(stopped["trial_epochs"], stopped["hypervolume"], s=14, marker="x", color="#d62728",
                        zorder=3, label=f"stopped early ({len(stopped)})")
        ax2.set_xlabel("trial-epochs spent (finished trials, in the order they ended)")
        ax2.set_ylim(0, 1.02)
        ax2.grid(True, alpha=0.25)
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.25)
    if fixed:
        ax.legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
