"""Render every table (Markdown, LaTeX, CSV) and the findings from the files the evaluate stages wrote:
metrics, per-record rows and protocols. No model, method or suite code is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kepitfalls.atomic import write_text
from kepitfalls.report import findings
from kepitfalls.report.cells import load_metrics, load_protocol, load_rows, metric_cell, separation
from kepitfalls.report.layout import COLUMN_NOTES, TABLES
from kepitfalls.report.settings import ReportParams
from kepitfalls.report.format import SMOKE
from kepitfalls.report.tables import Table, build, to_csv, to_latex, to_markdown

FINDINGS_FILE = "findings.yaml"


def suite_protocol(metrics_root: Path, suite: str, params: ReportParams) -> dict[str, Any] | None:
    """The suite's protocol as its evaluate stages wrote it (the first method's); every one must name the
    model params.yaml names, or the tables would mix runs."""
    found = None
    for method in params.report.methods:
        protocol = load_protocol(metrics_root, method, suite)
        if protocol is None:
            continue
        if protocol.get("model") != params.model:
            path = metrics_root / method / f"{suite}.protocol.json"
            raise ValueError(f"{path}: measured on {protocol.get('model')!r}, but params.yaml `model` is {params.model!r}: re-run evaluate")
        found = found or protocol
    return found


def _subset(protocol: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in protocol["config"].items())


def notes_for(table: Table, metrics_root: Path, params: ReportParams) -> dict[str, str]:
    """One footnote per column: its suite's protocol and subset, plus anything particular to the column."""
    notes = {}
    for c in table.columns:
        protocol = suite_protocol(metrics_root, c.suite, params)
        text = f"{protocol['protocol']} Subset: {_subset(protocol)}." if protocol else f"the {c.suite} suite was not run."
        notes[c.label] = " ".join(filter(None, [text, f"{c.label}: {COLUMN_NOTES[c.label]}" if c.label in COLUMN_NOTES else ""]))
    return notes


def caption(table: Table, metrics_root: Path, params: ReportParams) -> str:
    """What the table ran on (model, statistics corpus, subsets and data, method variants), how to read a
    cell, and at what sizes the methods' observed differences in smoke columns would separate."""
    options = params.report
    protocols = {s: p for s in dict.fromkeys(c.suite for c in table.columns) if (p := suite_protocol(metrics_root, s, params))}
    parts = [f"{table.title}. This run: model {params.model}"]
    if protocols:
        first = next(iter(protocols.values()))
        corpus = first["stats_corpus"]
        parts[0] += f" (dtype {first['model_dtype'] or 'as registered'}); statistics corpus {corpus['name']}, {corpus['tokens']:,} tokens"
        parts.append("Subsets and data: " + "; ".join(f"{s}: {_subset(p)}" for s, p in protocols.items()))
    described = {
        method: protocol["method"]["description"]
        for s in protocols
        for method in options.methods
        if (protocol := load_protocol(metrics_root, method, s)) and protocol["method"].get("description")
    }
    parts += [f"{method}: {text.rstrip('.')}" for method, text in described.items()]
    parts.append(
        "Cells: this run [95% interval] n=records (survey, GPT-J-6B, Hsueh et al. 2024: context, not targets, most "
        "copied from earlier papers). Yes/no-per-record metrics: Clopper–Pearson; others: percentile bootstrap over "
        f"records ({options.bootstrap.resamples} resamples, seed {options.bootstrap.seed}). {SMOKE}: fewer than "
        f"{options.min_n} records, a smoke value, not a measurement"
    )
    separating = []
    for c in table.columns:
        smoke = any(metric_cell(metrics_root, m, c.suite, c.metric, options).smoke for m in options.methods)
        pairs = separation(metrics_root, c.suite, c.metric, options) if smoke else []
        if pairs:
            separating.append(f"{c.label}: " + ", ".join(pairs))
    if separating:
        parts.append(
            "Records that would separate the methods (the n at which the observed paired difference's 95% interval "
            "would exclude 0, its half-width shrinking as 1/√n): " + "; ".join(separating)
        )
    return ". ".join(parts) + "."


def check_methods_ran(metrics_root: Path, methods: list[str]) -> None:
    """Every name in `report.methods` has cells an evaluate stage wrote: a typo or an unimplemented method is
    an error, never a row of "not implemented" (reserved for the survey's methods this project lacks)."""
    missing = [m for m in methods if not any((metrics_root / m).glob("*.protocol.json"))]
    if missing:
        raise ValueError(f"report.methods: {', '.join(missing)}: no evaluated cells under {metrics_root} "
                         "(not an implemented method, or its evaluate stages have not run)")


def render_all(metrics_root: Path, reference_dir: Path, params: ReportParams, out_dir: Path) -> list[Path]:
    """Write every table and the findings in three formats; returns the Markdown files."""
    for loader in (load_metrics, load_rows, load_protocol):
        loader.cache_clear()  # files may have changed since a previous call in this process
    check_methods_ran(metrics_root, params.report.methods)
    written = []
    for table in TABLES:
        frame = build(table, metrics_root, reference_dir, params.report)
        notes, text = notes_for(table, metrics_root, params), caption(table, metrics_root, params)
        write_text(out_dir / f"{table.name}.md", to_markdown(table, frame, notes, text))
        write_text(out_dir / f"{table.name}.tex", to_latex(table, frame, notes, text))
        write_text(out_dir / f"{table.name}.csv", to_csv(table, frame))
        written.append(out_dir / f"{table.name}.md")
    claims = findings.load(reference_dir / FINDINGS_FILE)
    results = findings.evaluate(claims, metrics_root, params.report)
    write_text(out_dir / "findings.md", findings.to_markdown(results, params.model))
    write_text(out_dir / "findings.tex", findings.to_latex(results, params.model))
    write_text(out_dir / "findings.csv", findings.to_csv(results))
    written.append(out_dir / "findings.md")
    return written
