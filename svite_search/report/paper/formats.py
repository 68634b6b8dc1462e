"""The paper's table as Markdown (one table per model, the runs and recipes behind our cells,
the sources) and as CSV (one line per row, :data:`~.rows.COLUMNS`)."""
from __future__ import annotations

import csv
import io
from typing import Any, Mapping, Sequence

from .grid import paper_results
from .rows import COLUMNS
from .runs import recipe_differences


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One Markdown table per model, the runs behind each of our cells, the recipes, the sources."""
    from ..summary import markdown_table  # pandas: imported only to write Markdown

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
