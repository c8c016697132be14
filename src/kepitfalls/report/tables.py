"""Tables of this run's metrics beside the survey's published numbers, in Markdown, LaTeX and CSV.

A cell is `ours` or `ours (survey)`; a cell we cannot fill says why ("method not implemented", "suite not
run"), never a silent blank. Each column's protocol goes into a numbered footnote.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kepitfalls.params import PROJECT_ROOT

SURVEY_DIR = PROJECT_ROOT / "reference"


@dataclass(frozen=True)
class Column:
    """One table column: which suite's metrics JSON holds it, under which key, and how it reads."""

    suite: str
    metric: str
    label: str
    higher_is_better: bool | None = True  # None: a count, no direction
    survey: str | None = None  # the survey CSV's column, where it publishes one


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[Column, ...]
    survey_file: str | None = None  # under reference/


def load_metrics(metrics_root: Path, method: str, suite: str) -> dict[str, float] | None:
    """A cell group's metrics, or None when that (method, suite) was not run."""
    path = metrics_root / method / f"{suite}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_survey(table: Table) -> dict[str, dict[str, str]]:
    """The survey's published numbers by method, as printed (strings)."""
    if table.survey_file is None:
        return {}
    with open(SURVEY_DIR / table.survey_file, encoding="utf-8") as handle:
        return {row["method"]: row for row in csv.DictReader(handle)}


def ours(metrics_root: Path, method: str, column: Column, implemented: set[str]) -> float | str:
    if method not in implemented:
        return "not implemented"
    metrics = load_metrics(metrics_root, method, column.suite)
    if metrics is None:
        return f"{column.suite} not run"
    if column.metric not in metrics:
        return f"no {column.metric}"
    return metrics[column.metric]


def build(table: Table, metrics_root: Path, methods: list[str], implemented: set[str]) -> pd.DataFrame:
    """Rows: our methods, then the survey's other methods; per column our value and the survey's.

    Every name in `methods` must be an implemented method: "not implemented" is reserved for the survey's
    methods this project has not built yet, never for a typo in `report.methods`.
    """
    unknown = [m for m in methods if m not in implemented]
    if unknown:
        raise ValueError(f"report.methods: {', '.join(unknown)} not implemented; implemented: {', '.join(sorted(implemented))}")
    survey = load_survey(table)
    rows = {}
    for method in list(dict.fromkeys([*methods, *survey])):
        row: dict[str, object] = {}
        for column in table.columns:
            row[column.label] = ours(metrics_root, method, column, implemented & set(methods))
            if column.survey is not None:
                row[f"{column.label} (survey)"] = survey.get(method, {}).get(column.survey, "")
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"
    return str(value)


def _arrow(column: Column) -> str:
    return {True: " ↑", False: " ↓", None: ""}[column.higher_is_better]


def to_markdown(table: Table, frame: pd.DataFrame, notes: dict[str, str]) -> str:
    """One cell per column: `ours (survey)` where the survey has a number; one footnote per distinct protocol."""
    texts = list(dict.fromkeys(notes.values()))
    numbered = {label: texts.index(text) + 1 for label, text in notes.items()}
    header = ["method"] + [f"{c.label}{_arrow(c)}" + (f" [{numbered[c.label]}]" if c.label in numbered else "") for c in table.columns]
    lines = [f"# {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in frame.iterrows():
        cells = [str(method)]
        for column in table.columns:
            cell = _number(row[column.label])
            published = row.get(f"{column.label} (survey)", "")
            cells.append(f"{cell} ({published})" if isinstance(published, str) and published else cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Cells read `this run (survey)`; the survey's numbers are GPT-J-6B (Hsueh et al. 2024), most copied "
              "from earlier papers, so they are context, not targets.", ""]
    lines += [f"[{i + 1}] {text}" for i, text in enumerate(texts)]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    text = text.replace("\\", "\\textbackslash{}")
    for char in "_%&#":
        text = text.replace(char, "\\" + char)
    return text


def to_latex(table: Table, frame: pd.DataFrame, caption: str) -> str:
    labels = [_tex(str(c)) for c in frame.columns]
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small",
        "\\begin{tabular}{l" + "r" * len(labels) + "}", "\\toprule",
        "Method & " + " & ".join(labels) + " \\\\", "\\midrule",
    ]
    lines += [" & ".join([_tex(str(method)), *(_tex(_number(v)) for v in row)]) + " \\\\" for method, row in frame.iterrows()]
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{_tex(caption)}}}", f"\\label{{tab:{table.name}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index_label="method")
    return buffer.getvalue()
