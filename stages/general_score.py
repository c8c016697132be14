"""DVC stage `general-score@<METHOD>`: score the method's stored Figure-4 outputs (every mode it ran) with
both scorers into metrics/general/<METHOD>.json and the tidy plots/general/<METHOD>.csv.

Usage: python stages/general_score.py <METHOD>
Reads files only (no model): a scorer change re-scores without re-generating.
"""

from __future__ import annotations

import csv
import io
import json
import sys

from kepitfalls import layout
from kepitfalls.atomic import write_json, write_text
from kepitfalls.general.scores import COLUMNS, flat_metrics, run_rows
from kepitfalls.general.config import General
from kepitfalls.params import load_sections
from kepitfalls.report.settings import ReportOptions


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    method = sys.argv[1]
    params = load_sections({"general": General, "report": ReportOptions})  # no model code (`params` validated the rest)
    modes = ["sequential"] + (["batch"] if method in params.general.batch_methods else [])
    unedited = _read(layout.general_unedited_file())
    rows = [row for mode in modes for row in run_rows(method, mode, unedited, _read(layout.general_run_file(method, mode)), params.report.bootstrap)]
    write_json(layout.general_metrics_file(method), flat_metrics(rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(layout.general_plot_file(method), buffer.getvalue())
    print(f"{method}: {len(rows)} rows ({', '.join(modes)})")
