"""Tables of this run's metrics beside the survey's published numbers, in Markdown, LaTeX and CSV.

A cell is `value [low, high] n=N` (its 95% interval over N records), with the survey's number in
parentheses where it publishes one; `†` marks a smoke value (fewer than `report.min_n` records). A cell we
cannot fill says why ("not implemented", "suite not run"), never a silent blank. Each column's protocol goes
into a numbered footnote. The CSV keeps every number in its own numeric column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from kepitfalls.report.cells import Cell, metric_cell
from kepitfalls.report.format import SMOKE, number, tex
from kepitfalls.report.settings import ReportOptions


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


#: Rows by method: our cell per column label, and the survey's number as printed ("" where it has none).
Frame = dict[str, dict[str, tuple[Cell, str]]]


def load_survey(table: Table, reference_dir: Path) -> dict[str, dict[str, str]]:
    """The survey's published numbers by method, as printed (strings)."""
    if table.survey_file is None:
        return {}
    with open(reference_dir / table.survey_file, encoding="utf-8") as handle:
        return {row["method"]: row for row in csv.DictReader(handle)}


#: The survey's cell for a method the survey's table has no row for (GRACE, KN): a dash, never a made-up value.
NOT_IN_SURVEY = "—"


def build(table: Table, metrics_root: Path, reference_dir: Path, options: ReportOptions) -> Frame:
    """Rows: our methods, then the survey's other methods; per column our cell and the survey's number."""
    survey = load_survey(table, reference_dir)

    def published(method: str, column: Column) -> str:
        if not column.survey:
            return ""
        return survey[method].get(column.survey, "") if method in survey else NOT_IN_SURVEY

    return {
        method: {c.label: (metric_cell(metrics_root, method, c.suite, c.metric, options), published(method, c)) for c in table.columns}
        for method in dict.fromkeys([*options.methods, *survey])
    }


def cell_text(cell: Cell) -> str:
    if cell.value is None:
        return cell.note
    text = number(cell.value)
    if cell.low is not None and cell.high is not None:
        text += f" [{number(cell.low)}, {number(cell.high)}]"
    if cell.n is not None:
        text += f" n={cell.n}" + (SMOKE if cell.smoke else "")
    return text


def arrow(column: Column) -> str:
    return {True: " ↑", False: " ↓", None: ""}[column.higher_is_better]


def _numbered(notes: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    texts = list(dict.fromkeys(notes.values()))
    return texts, {label: texts.index(text) + 1 for label, text in notes.items()}


def _ours_and_survey(cell: Cell, published: str) -> str:
    return f"{cell_text(cell)} ({published})" if published else cell_text(cell)


def to_markdown(table: Table, frame: Frame, notes: dict[str, str], caption: str) -> str:
    """One cell per column: `ours [interval] n (survey)`; the caption; one footnote per distinct protocol."""
    texts, numbered = _numbered(notes)
    header = ["method"] + [f"{c.label}{arrow(c)}" + (f" [{numbered[c.label]}]" if c.label in numbered else "") for c in table.columns]
    lines = [f"# {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in frame.items():
        lines.append("| " + " | ".join([method, *(_ours_and_survey(*row[c.label]) for c in table.columns)]) + " |")
    lines += ["", caption, ""]
    lines += [f"[{i + 1}] {text}" for i, text in enumerate(texts)]
    return "\n".join(lines) + "\n"


def to_latex(table: Table, frame: Frame, notes: dict[str, str], caption: str) -> str:
    """The same cells as the Markdown, ↑/↓ in the header, footnote marks and the notes under the table."""
    texts, numbered = _numbered(notes)
    header = [tex(f"{c.label}{arrow(c)}") + (f"$^{{{numbered[c.label]}}}$" if c.label in numbered else "") for c in table.columns]
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small",
        "\\begin{tabular}{l" + "r" * len(header) + "}", "\\toprule",
        "Method & " + " & ".join(header) + " \\\\", "\\midrule",
    ]
    lines += [" & ".join([tex(method), *(tex(_ours_and_survey(*row[c.label])) for c in table.columns)]) + " \\\\" for method, row in frame.items()]
    lines += ["\\bottomrule", "\\end{tabular}", "\\par\\footnotesize"]
    lines += [f"$^{{{i + 1}}}$ {tex(text)}\\\\" for i, text in enumerate(texts)]
    lines += [f"\\caption{{{tex(caption)}}}", f"\\label{{tab:{table.name}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table, frame: Frame) -> str:
    """Per column: value, ci_low, ci_high, n (numbers or empty), smoke (0/1), note (text), survey (as printed)."""
    header = ["method"]
    for c in table.columns:
        header += [c.label, f"{c.label} ci_low", f"{c.label} ci_high", f"{c.label} n", f"{c.label} smoke", f"{c.label} note"]
        header += [f"{c.label} (survey)"] if c.survey else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for method, row in frame.items():
        out: list[object] = [method]
        for c in table.columns:
            cell, published = row[c.label]
            out += ["" if v is None else v for v in (cell.value, cell.low, cell.high, cell.n)]
            out += [int(cell.smoke), cell.note]
            out += [published] if c.survey else []
        writer.writerow(out)
    return buffer.getvalue()
