"""From the evaluate stage's files to table cells: each metric's value, 95% interval and n, computed from its
per-record rows (never from the aggregates), and the record counts at which observed differences would
separate two methods. Reads files only: no model, method or suite code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kepitfalls.metrics.records import by_metric
from kepitfalls.report.format import number
from kepitfalls.report.settings import ReportOptions
from kepitfalls.stats.intervals import interval, paired_difference, separating_n

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Cell:
    """Our number with its 95% interval and record count, or (value None) why there is none.

    `low`/`high` are None for a number that is no mean over records (Score, counts); `smoke` marks a cell
    resting on fewer than `report.min_n` records.
    """

    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    smoke: bool = False
    note: str = ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


@cache
def load_metrics(metrics_root: Path, method: str, suite: str) -> dict[str, float] | None:
    """A cell group's flat metrics, or None when that (method, suite) was not run."""
    path = metrics_root / method / f"{suite}.json"
    return _read_json(path) if path.is_file() else None


@cache
def load_rows(metrics_root: Path, method: str, suite: str) -> dict[str, Rows]:
    """A cell group's per-record rows by metric (empty when the group has none)."""
    path = metrics_root / method / f"{suite}.records.jsonl"
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
    try:
        return by_metric(rows)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


@cache
def load_protocol(metrics_root: Path, method: str, suite: str) -> dict[str, Any] | None:
    """What a cell group was measured on (written by its evaluate stage), or None when it was not run."""
    path = metrics_root / method / f"{suite}.protocol.json"
    return _read_json(path) if path.is_file() else None


def metric_cell(metrics_root: Path, method: str, suite: str, metric: str, options: ReportOptions) -> Cell:
    """One metric of one (method, suite): from its rows where it has any, else the plain number."""
    if method not in options.methods:
        return Cell(note="not implemented")
    metrics = load_metrics(metrics_root, method, suite)
    if metrics is None:
        return Cell(note=f"{suite} not run")
    rows = load_rows(metrics_root, method, suite).get(metric)
    if rows is None:
        return Cell(metrics[metric]) if metric in metrics else Cell(note=f"no {metric}")
    found = interval(rows, options.bootstrap.resamples, options.bootstrap.seed)
    return Cell(metrics.get(metric, found.value), found.low, found.high, found.n, smoke=found.n < options.min_n)


def separation(metrics_root: Path, suite: str, metric: str, options: ReportOptions) -> list[str]:
    """For each pair of our methods with rows for `metric`: the paired difference and the number of records
    at which its interval would exclude 0 (where it does not already). Pairs with nothing to scale from are
    summed up in one clause each (no observed difference: named; one shared record: counted), so that a
    caption over nine methods' 36 pairs stays readable."""
    have = [m for m in options.methods if metric in load_rows(metrics_root, m, suite)]
    texts, tied, single = [], [], 0
    for i, a in enumerate(have):
        for b in have[i + 1 :]:
            rows_a, rows_b = (load_rows(metrics_root, m, suite)[metric] for m in (a, b))
            diff = paired_difference(rows_a, rows_b, options.bootstrap.resamples, options.bootstrap.seed)
            needed = separating_n(diff)
            if needed is None and diff.n < 2:  # a one-record interval is the point itself
                single += 1
            elif needed is None:  # from two records on: no difference at all
                tied.append(f"{a}−{b}")
            else:
                verdict = f"separated at n = {diff.n}" if diff.excludes_zero() else f"separates at n ≈ {needed}"
                texts.append(f"{a}−{b} {'+' if diff.value >= 0 else ''}{number(diff.value)}: {verdict}")
    if tied:
        texts.append("no observed difference: " + ", ".join(tied))
    if single:
        texts.append(f"{single} pair{'s' if single > 1 else ''} on one shared record each, no spread to scale from")
    return texts
