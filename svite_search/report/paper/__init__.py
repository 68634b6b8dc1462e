"""The paper's sparsity tables beside our analytic MACs and, where runs exist, our accuracy.

One module per job:

================  ==============================================================================
:mod:`.grid`      the paper's grid of settings and the values it reports, each with its source
:mod:`.runs`      our finished runs on disk, and the recipe that decides which of them pool
:mod:`.rows`      one row per setting (and recipe): our MACs, the paper's figures, our top-1
:mod:`.formats`   the rows as Markdown or CSV
================  ==============================================================================

The MACs of a setting are what :func:`svite_search.report.macs.macs_for` counts (the ``flops``
command's figures). ``svite-search paper-table`` prints the table.

Example::

    rows = paper_rows()
    next(r for r in rows if r["setting"] == "SViTE+ 187/197 tokens, 50 % sparse (density 0.5)"
         and r["label"] == "DeiT-Small")["macs_saving_pct"]
"""
from __future__ import annotations

from .formats import format_csv, format_markdown
from .grid import PAPER_MODELS, PAPER_PATCHES, Setting, paper_results, paper_settings, reported_for
from .rows import COLUMNS, paper_rows
from .runs import RunRecord, find_runs, matches, recipe_differences, recipe_names, recipe_of

__all__ = [
    "COLUMNS",
    "PAPER_MODELS",
    "PAPER_PATCHES",
    "RunRecord",
    "Setting",
    "find_runs",
    "format_csv",
    "format_markdown",
    "matches",
    "paper_results",
    "paper_rows",
    "paper_settings",
    "recipe_differences",
    "recipe_names",
    "recipe_of",
    "reported_for",
]
