"""Render every table (Markdown, LaTeX, CSV) with footnotes built from the suites' protocols."""

from __future__ import annotations

from pathlib import Path

from kepitfalls.atomic import write_text
from kepitfalls.config import Params
from kepitfalls.methods import SUPPORTED as IMPLEMENTED
from kepitfalls.report.layout import COLUMN_NOTES, TABLES
from kepitfalls.report.tables import Table, build, to_csv, to_latex, to_markdown
from kepitfalls.suites import SUPPORTED as SUITES, suite_module


def _protocol(suite: str, params: Params) -> str:
    if suite not in SUITES:
        return f"the {suite} suite is not implemented yet, so these cells cannot be produced."
    config = getattr(params.suites, suite)
    if config is None:
        return f"the {suite} suite is not configured in params.yaml."
    return f"{suite_module(suite).PROTOCOL} Subset: {config.model_dump()}."


def notes_for(table: Table, params: Params) -> dict[str, str]:
    """One footnote per column: its suite's protocol plus anything particular to the column."""
    return {
        c.label: " ".join(filter(None, [_protocol(c.suite, params), f"{c.label}: {COLUMN_NOTES[c.label]}" if c.label in COLUMN_NOTES else ""]))
        for c in table.columns
    }


def render_all(metrics_root: Path, params: Params, out_dir: Path) -> list[Path]:
    """Write every table in three formats; returns the Markdown files."""
    methods = list(params.report.methods)
    written = []
    for table in TABLES:
        frame = build(table, metrics_root, methods, set(IMPLEMENTED))
        notes = notes_for(table, params)
        caption = f"{table.title}. Model {params.model}; this run beside the survey (Hsueh et al. 2024, GPT-J-6B)."
        write_text(out_dir / f"{table.name}.md", to_markdown(table, frame, notes))
        write_text(out_dir / f"{table.name}.tex", to_latex(table, frame, caption))
        write_text(out_dir / f"{table.name}.csv", to_csv(frame))
        written.append(out_dir / f"{table.name}.md")
    return written
