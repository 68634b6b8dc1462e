"""pareto.html renders in a real browser with the network cut off: points, labels, top axis."""
from __future__ import annotations

import re
from pathlib import Path

from svite_search.report import write_report_for_study

from _browser import render
from test_front_ties import _study


def test_pareto_html_is_self_contained_and_renders_offline(tmp_path: Path) -> None:
    study = _study(tmp_path / "study")
    write_report_for_study(study, tmp_path / "report")
    page = tmp_path / "report" / "pareto.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=", html), "the page loads a script from elsewhere"
    dom = render(page)
    assert 'class="main-svg"' in dom, "plotly did not draw"
    # 4 trials + 3 rings of the front (the float32/float64 tie #1 is not on it)
    assert len(re.findall(r'class="point"', dom)) == 7
    assert "Pareto front (3)" in dom and "dense (1)" in dom and "SViTE (3)" in dom
    assert sorted(re.findall(r">(#\d+)<", dom)) == ["#0", "#2", "#3"]
    assert "dense baseline: 96.00" in dom
    assert "MACs saving vs dense (%)" in dom
    top_ticks = re.findall(r'class="x2tick"><text[^>]*>([^<]*)<', dom)
    assert top_ticks and all(t.endswith("%") for t in top_ticks), top_ticks
    assert "compute per image (MMACs" in dom
