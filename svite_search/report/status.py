"""Where a study stands: trial states, each running trial's epoch and top-1, an ETA, the front.

Everything is read from the study's Optuna storage (a study directory's sqlite file or a shared
database), so it works from any machine and while another process runs the study. The search
keeps each running trial's progress there as user attributes (``epoch``, ``top1_history``).

Example::

    info = study_status(Path("runs/quickstart"))
    info["state"], info["counts"]["complete"], info["eta_s"]
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from .._study_dir import INNER_DIRS, STUDY_FILE
from ..search.study import trial_attrs
from ._frame import objectives_of, repeat_mask, settings_text, trials_frame
from ._study import load_study_dir
from .pareto import pareto_mask

STATES = ("COMPLETE", "RUNNING", "WAITING", "FAIL", "PRUNED")


def _get(spec: Mapping[str, Any], dotted: str) -> Any:
    node: Any = spec
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _driver_gone(attrs: Mapping[str, Any]) -> bool:
    """Whether a RUNNING trial's driver is known dead (a process of this host that is gone)."""
    from ..search.study import DRIVER_ATTR, driver_gone

    driver = attrs.get(DRIVER_ATTR)
    return bool(driver) and driver_gone(str(driver))


def study_status(study_dir: str | Path, now: _dt.datetime | None = None) -> dict[str, Any]:
    """The state of the study in ``study_dir`` as one JSON-ready dict.

    Keys: ``study``, ``study_dir``, ``state`` (running | complete | stopped | failed | empty),
    ``n_trials`` (the target), ``counts`` (per state; ``repeats``: of the pruned, the repeats
    skipped untrained; ``finished`` = complete + pruned - repeats, what counts towards ``n_trials``),
    ``running`` (per running trial: number, variant, settings, epoch, epochs, top1, elapsed_s,
    ``driver_gone``), ``eta_s`` (seconds to ``n_trials``, ``None`` until one trial finished or
    one epoch ran), ``trial_time_s`` (trial time spent so far), ``front`` (the Pareto front:
    number, variant, settings, values).
    """
    study, spec = load_study_dir(study_dir)
    objectives = objectives_of(study, spec)
    method = spec.get("method") if isinstance(spec.get("method"), str) else None
    trials = study.get_trials(deepcopy=False)
    frame = trials_frame(trials, objectives, default_method=method)
    now = now or _dt.datetime.now()
    counts = {s.lower(): int((frame["state"] == s).sum()) if len(frame) else 0 for s in STATES}
    counts["repeats"] = int(repeat_mask(frame).sum())  # of the pruned: skipped untrained
    counts["finished"] = counts["complete"] + counts["pruned"] - counts["repeats"]
    target = _number(_get(spec, "search.n_trials"))
    n_trials = int(target) if target else None
    default_epochs = _number(_get(spec, "train.epochs"))
    by_number = {t.number: t for t in trials}

    running = []
    for _, row in frame[frame["state"] == "RUNNING"].iterrows() if len(frame) else []:
        trial = by_number[int(row["number"])]
        attrs = trial_attrs(trial)
        history = attrs.get("top1_history") or []
        epochs = _number(trial.params.get("train.epochs")) or default_epochs
        start = trial.datetime_start
        running.append({
            "number": int(row["number"]), "variant": row["variant"], "settings": settings_text(row),
            "epoch": int(attrs.get("epoch") or len(history) or 0),
            "epochs": int(epochs) if epochs else None,
            "top1": _number(history[-1]) if history else None,
            "elapsed_s": (now - start).total_seconds() if start is not None else None,
            "driver_gone": _driver_gone(trial.user_attrs),
        })

    durations = pd.to_numeric(frame.loc[frame["state"] == "COMPLETE", "duration_s"], errors="coerce").dropna() \
        if len(frame) else pd.Series(dtype=float)
    eta = estimate_eta(n_trials, counts["finished"], running, float(durations.mean()) if len(durations) else None,
                       concurrency=_number(_get(spec, "executor.max_concurrent")))
    front = []
    if counts["complete"] and len(objectives) >= 1:
        frame["pareto"] = pareto_mask(frame, objectives).astype(bool)
        for _, row in frame[frame["pareto"]].sort_values("number").iterrows():
            front.append({"number": int(row["number"]), "variant": row["variant"], "settings": settings_text(row),
                          "values": {o.metric: float(row[o.metric]) for o in objectives}})
    spent = pd.to_numeric(frame.get("duration_s"), errors="coerce").sum() if len(frame) else 0.0
    spent += sum(r["elapsed_s"] or 0.0 for r in running)
    return {
        "study": study.study_name, "study_dir": str(study_dir), "state": overall_state(counts, n_trials, running),
        "n_trials": n_trials, "counts": counts, "running": running, "eta_s": eta, "trial_time_s": float(spent),
        "front": front, "objectives": [{"metric": o.metric, "direction": o.direction} for o in objectives],
    }


def overall_state(counts: Mapping[str, int], n_trials: int | None, running: list[dict[str, Any]]) -> str:
    """running (a live trial), complete (n_trials finished), failed (every trial failed),
    stopped (not finished and nothing runs: rerun the search to resume), empty."""
    if any(not r["driver_gone"] for r in running):
        return "running"
    total = sum(counts[s.lower()] for s in STATES)
    if total == 0:
        return "empty"
    if n_trials is not None and counts["finished"] >= n_trials:
        return "complete"
    if counts["fail"] and not counts["finished"]:
        return "failed"
    return "stopped" if n_trials is not None else "complete"


def estimate_eta(n_trials: int | None, finished: int, running: list[dict[str, Any]], mean_trial_s: float | None,
                 concurrency: float | None = None) -> float | None:
    """Seconds until ``n_trials`` have finished: the work left (running trials' remaining epochs,
    then the trials not started) at the mean trial time, spread over the trials run at once."""
    if n_trials is None:
        return None
    live = [r for r in running if not r["driver_gone"]]
    if mean_trial_s is None:  # no finished trial yet: time per epoch of the running ones
        rates = [r["elapsed_s"] / r["epoch"] * r["epochs"] for r in live if r["epoch"] and r["epochs"] and r["elapsed_s"]]
        if not rates:
            return None
        mean_trial_s = sum(rates) / len(rates)
    left_running = sum(1.0 - min(r["epoch"] / r["epochs"], 1.0) if r["epochs"] else 0.5 for r in live)
    not_started = max(n_trials - finished - len(live), 0)
    parallel = max(len(live), int(concurrency or 1), 1)
    return mean_trial_s * (left_running + not_started) / parallel


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_status(info: Mapping[str, Any]) -> str:
    """The status as the lines ``svite-search status`` prints."""
    c = info["counts"]
    target = f"/{info['n_trials']}" if info["n_trials"] else ""
    lines = [
        f"study {info['study']}  ({info['study_dir']})  {info['state']}",
        f"trials {c['finished']}{target} finished: {c['complete']} complete, {c['pruned'] - c.get('repeats', 0)} pruned, "
        + (f"{c['repeats']} repeats skipped, " if c.get("repeats") else "") + f"{c['fail']} failed; "
        f"{c['running']} running, {c['waiting']} waiting",
    ]
    if info["state"] == "running":
        lines.append(f"ETA    {format_duration(info['eta_s'])}  (trial time so far {format_duration(info['trial_time_s'])})")
    for r in info["running"]:
        epoch = f"epoch {r['epoch']}/{r['epochs']}" if r["epochs"] else f"epoch {r['epoch']}"
        top1 = f"top1 {r['top1']:.2f}" if r["top1"] is not None else "top1 —"
        gone = "  (its driver is gone: rerun the search to resume it)" if r["driver_gone"] else ""
        lines.append(f"  running #{r['number']:<4} {r['variant']:<12} {epoch:<12} {top1:<11} "
                     f"{format_duration(r['elapsed_s'])}  {r['settings']}{gone}")
    if info["front"]:
        metrics = [o["metric"] for o in info["objectives"]]
        lines.append(f"front  {len(info['front'])} trials")
        for f in info["front"]:
            values = "  ".join(f"{m} {f['values'][m]:.4g}" for m in metrics)
            lines.append(f"  #{f['number']:<4} {f['variant']:<12} {values}  {f['settings']}")
    return "\n".join(lines)


def list_studies(root: str | Path) -> list[dict[str, Any]]:
    """Every study directory (one with ``study.json``) under ``root``, with its state."""
    root = Path(root)
    found = []
    for marker in sorted(root.rglob(STUDY_FILE)):
        directory = marker.parent
        if set(INNER_DIRS) & set(marker.relative_to(root).parts[:-1]):
            continue  # inside a study: not a study of its own
        try:
            info = study_status(directory)
        except Exception as err:  # one unreadable study must not hide the others
            found.append({"study_dir": str(directory), "study": None, "state": "unreadable", "error": f"{type(err).__name__}: {err}"})
            continue
        found.append({k: info[k] for k in ("study", "study_dir", "state", "n_trials", "counts")}
                     | {"front_size": len(info["front"])})
    return found
