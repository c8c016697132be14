"""DVC stage `report`: render Tables 3 and 4, the CounterFact table and the tested survey findings from the
files under metrics/ into reports/, and Figure 4 from plots/general/. Reads files only (no model, method or
suite code)."""

from __future__ import annotations

from pathlib import Path

from kepitfalls.general.figure import render as render_figure4
from kepitfalls.report.render import render_all
from kepitfalls.report.settings import load_report_params

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    params = load_report_params(ROOT / "params.yaml")
    for path in render_all(ROOT / "metrics", ROOT / "reference", params, ROOT / "reports"):
        print(path)
    print(render_figure4(ROOT / "params.yaml", ROOT / "plots" / "general", ROOT / "reference", ROOT / "reports"))
