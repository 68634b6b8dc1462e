"""Reports of a study: the trials, the Pareto front, hypervolume, importances, a summary.

``write_report(DIR)`` reads the Optuna study of a study directory and writes, into
``DIR/report/`` by default:

=====================  ================================================================
``trials.csv``         every trial: state, variant, objectives, result metrics, params, durations
``pareto.csv``         the non-dominated completed trials (same columns)
``pareto.png``         all trials, the front ringed and joined, the dense baseline marked
``pareto.html``        the same, interactive: hover shows each trial's parameters
``hypervolume.csv``    hypervolume after each completed trial, on the study's scale and the fixed one
``compute.csv``        after each finished trial: trial-epochs and trial-hours spent, hypervolume
``hypervolume.png``    hypervolume against trial number and against trial-epochs spent
``importances.csv``    parameter importances per objective
``summary.md``         settings, Pareto table, best accuracy per MACs budget, savings vs dense
=====================  ================================================================

``write_report_for_study(study, out_dir, spec)`` does the same for an ``optuna.Study`` in hand.

Example::

    info = write_report(Path("runs/quickstart"))
    info["pareto"]  # [{"number": 3, "params": {...}, "values": {"top1": 96.1, "gmacs": 0.0005}}, ...]
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import socket
import tempfile
import logging
from pathlib import Path
from typing import Any, Mapping

from ._frame import DEFAULT_OBJECTIVES, Objective, objectives_of, trials_frame
from .._study_dir import report_dir
from ._study import load_study_dir
from .pareto import hypervolume_history, non_dominated, pareto_mask

__all__ = [
    "write_report",
    "write_report_for_study",
    "load_study_dir",
    "trials_frame",
    "objectives_of",
    "non_dominated",
    "pareto_mask",
    "hypervolume_history",
    "Objective",
    "DEFAULT_OBJECTIVES",
]

log = logging.getLogger(__name__)


def _pareto_records(frame: Any, objectives: list[Objective]) -> list[dict[str, Any]]:
    out = []
    for _, row in frame[frame["pareto"]].sort_values("number").iterrows():
        params = {k[len("params."):]: row[k] for k in frame.columns if k.startswith("params.") and _present(row[k])}
        out.append({
            "number": int(row["number"]),
            "variant": row["variant"],
            "params": {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()},
            "values": {o.metric: float(row[o.metric]) for o in objectives},
        })
    return out


def _present(value: Any) -> bool:
    try:
        return value is not None and not (isinstance(value, float) and value != value)
    except TypeError:
        return True


def _relative_paths(frame: Any, study_dir: Path) -> None:
    """Trial directories as paths inside the study directory (``trials/3``): the report stays
    valid when the directory moves, and says nothing about the machine it ran on."""
    root = str(study_dir.resolve())
    for column in [c for c in frame.columns if str(c).endswith("_dir")]:
        frame[column] = [
            str(Path(v).resolve().relative_to(root)) if isinstance(v, str) and str(Path(v).resolve()).startswith(root + "/")
            else v
            for v in frame[column]
        ]


def write_report_for_study(study: Any, out_dir: str | Path, spec: Mapping[str, Any] | None = None, *,
                           title: str | None = None, study_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the report of ``study`` (an ``optuna.Study``) into ``out_dir``.

    ``study_dir``, when given, makes the trial directories in the tables relative to it.
    Returns ``{"report_dir", "files", "pareto", "trials", "complete", "failed", "hypervolume",
    "hypervolume_fixed", "reference_point", "compute"}`` (``compute``: :func:`.compute.compute_spent`).
    """
    spec = dict(spec or {})
    final = Path(out_dir)
    final.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(final)
    # Every file is written into a staging folder of this process, then renamed over the old one:
    # a reader (or a kill) never sees a half-written report file, and two writers at once each
    # replace whole files.
    out = Path(tempfile.mkdtemp(dir=final, prefix=f".staging-{_writer_id()}-", suffix=".tmp"))
    try:
        result = _write_files(study, out, spec, title=title, study_dir=study_dir)
        for name in result["files"]:
            os.replace(out / name, final / name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result["report_dir"] = str(final)
    return result


def _writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _writer_alive(name: str) -> bool:
    """Whether the process that named a staging folder ``.staging-<host>-<pid>-XXXX.tmp`` may
    still be writing it: it runs on another host (unknowable: kept) or is alive here."""
    writer = name[len(".staging-"):].rsplit("-", 1)[0]
    host, _, pid = writer.rpartition("-")
    if not host or not pid.isdigit():
        return False  # an older layout without a writer: a killed write
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned_staging(final: Path) -> None:
    """Remove the staging folders of killed writes; another live writer's folder stays."""
    for stale in final.glob(".staging-*.tmp"):
        if not _writer_alive(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def _write_files(study: Any, out: Path, spec: dict[str, Any], *, title: str | None,
                 study_dir: str | Path | None) -> dict[str, Any]:
    from .importance import param_importances
    from .compute import compute_history, compute_spent
    from .pareto import fixed_bounds
    from .plots import hypervolume_png, pareto_html, pareto_png
    from .summary import summary_markdown

    objectives = objectives_of(study, spec)
    method = spec.get("method") if isinstance(spec.get("method"), str) else None
    frame = trials_frame(study.get_trials(deepcopy=False), objectives, default_method=method)
    frame["pareto"] = pareto_mask(frame, objectives).astype(bool)
    if study_dir is not None:
        _relative_paths(frame, Path(study_dir))
    name = title or spec.get("name") or study.study_name
    files: list[str] = []

    def keep(path: Path) -> None:
        files.append(path.name)

    frame.to_csv(out / "trials.csv", index=False)
    keep(out / "trials.csv")
    frame[frame["pareto"]].sort_values("number").to_csv(out / "pareto.csv", index=False)
    keep(out / "pareto.csv")

    bounds = fixed_bounds(objectives, frame) if len(objectives) >= 2 and len(frame) else None
    history = hypervolume_history(frame, objectives, bounds) if len(objectives) >= 2 and len(frame) else None
    spent = compute_spent(frame, spec)
    compute = compute_history(frame, objectives, spec, bounds) if len(objectives) >= 2 else None
    complete = int((frame["state"] == "COMPLETE").sum()) if len(frame) else 0
    if len(objectives) >= 2 and complete:
        subtitle = _subtitle(spec)
        failed = int((frame["state"] == "FAIL").sum())
        note = f"{failed} failed trial(s) not shown. " if failed else ""
        note += "MACs: analytic multiply-accumulates per image (the paper's 'FLOPs')."
        keep(pareto_png(frame, objectives, out / "pareto.png", title=f"{name}{subtitle}", note=note))
        keep(pareto_html(frame, objectives, out / "pareto.html", title=f"{name}{subtitle}"))
    if history is not None:
        history.to_csv(out / "hypervolume.csv", index=False)
        keep(out / "hypervolume.csv")
    if compute is not None and len(compute):
        compute.to_csv(out / "compute.csv", index=False)
        keep(out / "compute.csv")
    if history is not None and len(history):
        keep(hypervolume_png(history, out / "hypervolume.png", title=f"{name}: hypervolume", compute=compute))
    import pandas as pd

    importances, reason = param_importances(study, objectives) if complete else (pd.DataFrame(columns=["objective", "param", "importance"]), "no completed trial")
    importances.to_csv(out / "importances.csv", index=False)
    keep(out / "importances.csv")
    files.append("summary.md")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = summary_markdown(
        name=str(name), spec=spec, frame=frame, objectives=objectives,
        history=history if history is not None else pd.DataFrame(columns=["number", "hypervolume", "front_size"]),
        importances=importances, importance_reason=reason, files=files, spent=spent, compute=compute,
        bounds=bounds.points(objectives) | {"fixed": list(bounds.fixed)} if bounds is not None else None,
        generated=f"Written by `svite-search report` on {stamp}.",
    )
    (out / "summary.md").write_text(text)
    return {
        "report_dir": str(out),
        "files": files,
        "pareto": _pareto_records(frame, objectives) if len(frame) else [],
        "trials": int(len(frame)),
        "complete": complete,
        "failed": int((frame["state"] == "FAIL").sum()) if len(frame) else 0,
        "hypervolume": float(history["hypervolume"].iloc[-1]) if history is not None and len(history) else None,
        "hypervolume_fixed": _final(history, "hypervolume_fixed"),
        "reference_point": bounds.points(objectives)["reference"] if bounds is not None else None,
        "compute": spent,
    }


def _final(history: Any, column: str) -> float | None:
    if history is None or not len(history) or column not in history:
        return None
    value = float(history[column].iloc[-1])
    return value if value == value else None


def _subtitle(spec: Mapping[str, Any]) -> str:
    model = (spec.get("model") or {}).get("name") if isinstance(spec.get("model"), Mapping) else None
    data = (spec.get("data") or {}).get("dataset") if isinstance(spec.get("data"), Mapping) else None
    epochs = (spec.get("train") or {}).get("epochs") if isinstance(spec.get("train"), Mapping) else None
    parts = [str(p) for p in (model, data) if p and not isinstance(p, Mapping)]
    if epochs and not isinstance(epochs, Mapping):
        parts.append(f"{epochs} epochs")
    return f" ({', '.join(parts)})" if parts else ""


def write_report(study_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the report of the study in ``study_dir`` into ``out_dir`` (default ``study_dir/report``)."""
    study, spec = load_study_dir(study_dir)
    out = Path(out_dir) if out_dir is not None else report_dir(study_dir)
    return write_report_for_study(study, out, spec, study_dir=study_dir)
