"""DVC stage `figure4`: reports/figure4.png and .svg from every method's tidy Figure-4 CSV and the survey's
curves (reference/survey_figure4.csv, approximate). Reads files only.

Usage: python stages/figure4.py
"""

from __future__ import annotations

from kepitfalls import layout
from kepitfalls.general.figure import draw, read_rows, read_survey
from kepitfalls.params import PROJECT_ROOT, load_params

if __name__ == "__main__":
    params = load_params()
    rows = [row for method in params.general.methods for row in read_rows(layout.general_plot_file(method))]
    survey = read_survey(PROJECT_ROOT / "reference" / "survey_figure4.csv")
    out = layout.reports_dir()
    draw(rows, survey, params.model, out / "figure4.png", out / "figure4.svg")
    print(f"figure 4: {len({r['method'] for r in rows})} methods, {len(rows)} rows -> {out / 'figure4.png'}")
