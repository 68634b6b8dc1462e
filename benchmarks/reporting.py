"""The Markdown both suite reports are made of (``run_all``'s and ``gpu_check``'s): tables, the
machine, goal status and a record's tables and notes. Plain Python, no torch: the suite's
driver renders reports without importing what the benchmarks measure."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

#: how a check's ``met`` reads in a report
STATUS = {True: "met", False: "**not met**", None: "reported (no goal)"}


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [_row(columns), _row(["---"] * len(columns))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def load(value: float | None) -> str:
    """A load average as the reports print it."""
    return "?" if value is None else f"{value:.2f}"


def machine_lines(machine: Mapping[str, Any]) -> list[str]:
    """The report's "Machine" section: what the figures were measured on."""
    gpu = machine.get("gpu")
    gpu_text = "none" if not gpu else f"{gpu['name']} ×{gpu['count']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})"
    cores = machine.get("cpu_physical_cores")
    return [
        f"- CPU: {machine.get('cpu_model')}, {cores if cores else '?'} physical cores, "
        f"{machine.get('cpu_logical')} logical CPUs ({machine.get('cpu_usable')} usable by this process)",
        f"- GPU: {gpu_text}; benchmarks ran on: {machine.get('device')}",
        f"- torch {machine.get('torch')}, timm {machine.get('timm')}, Python {machine.get('python')}, "
        f"{machine.get('platform')}",
        f"- torch intra-op threads while timing: {machine.get('timing_threads', 'see each benchmark')}",
        f"- date: {machine.get('date')}; 1-minute load average at the start: {load(machine.get('load_average_1min'))}",
    ]


def tables_and_notes(record: Mapping[str, Any]) -> list[str]:
    """A record's (or a part's) tables, each under its bold title, then its notes as a list."""
    lines: list[str] = []
    for t in record["tables"]:
        lines += [f"**{t['title']}**", "", markdown_table(t["columns"], t["rows"]), ""]
    lines += [f"- {note}" for note in record.get("notes", [])]
    return lines
