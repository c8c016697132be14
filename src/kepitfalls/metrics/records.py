"""Per-record scores behind every metric, so that intervals and paired tests are computed from records.

A row is one record's value of one metric: `{"case", "metric", "kind", "value"}`, plus `"prompts"` (the
per-prompt values it averages) where a record averages several prompts. `kind` says how records combine:

- `binary`: one yes/no outcome per record (value 0 or 100); the metric is their mean (Clopper–Pearson).
- `mean`: any other per-record value (a share over prompts, a magnitude, a divergence); the metric is the
  mean over records (record-level bootstrap).
- `pooled`: the metric pools every prompt of every record (MQuAKE's edit-wise accuracy); bootstrap over
  records, the statistic recomputed from the resampled records' prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

BINARY, MEAN, POOLED = "binary", "mean", "pooled"
KINDS = (BINARY, MEAN, POOLED)
#: The value a binary record scores when the outcome is yes (metrics are ×100).
YES = 100.0


@dataclass(frozen=True)
class Evaluation:
    """What a suite's evaluation returns: the flat metrics and the per-record rows behind them."""

    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)

    def with_diagnostics(self, ids: Sequence[str], per_case: Sequence[dict[str, Sequence[float]]]) -> Evaluation:
        """This evaluation with each record's installed-component diagnostics added after it: their metrics
        (`diagnostic_metrics`) and their rows (`diagnostic_rows`, record `ids[i]` for `per_case[i]`)."""
        rows = [r for case, found in zip(ids, per_case) for r in diagnostic_rows(case, found)]
        return Evaluation({**self.metrics, **diagnostic_metrics(per_case)}, [*self.records, *rows])


def row(case: str, metric: str, kind: str, value: float, prompts: Sequence[float] | None = None) -> dict[str, Any]:
    """One record's value of one metric; `prompts` where the value averages several prompts."""
    if kind not in KINDS:
        raise ValueError(f"metric {metric}: kind must be one of {KINDS}, got {kind!r}")
    if kind == BINARY and value not in (0.0, YES):
        raise ValueError(f"metric {metric}, case {case}: a binary record scores 0 or {YES}, got {value}")
    out: dict[str, Any] = {"case": case, "metric": metric, "kind": kind, "value": float(value)}
    if prompts is not None:
        out["prompts"] = [float(p) for p in prompts]
    return out


def binary(case: str, metric: str, outcome: bool) -> dict[str, Any]:
    return row(case, metric, BINARY, YES if outcome else 0.0)


def statistic(rows: Sequence[dict[str, Any]]) -> float:
    """The metric the rows of one metric stand for: the mean over records, or over all prompts if pooled."""
    if not rows:
        raise ValueError("no records to summarise")
    if rows[0]["kind"] == POOLED:
        return mean(p for r in rows for p in r["prompts"])
    return mean(r["value"] for r in rows)


def by_metric(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by metric, in first-seen order; every metric's rows must agree on their kind."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(r["metric"], []).append(r)
    for name, of_metric in grouped.items():
        kinds = {r["kind"] for r in of_metric}
        if len(kinds) != 1:
            raise ValueError(f"metric {name}: rows of several kinds {sorted(kinds)}")
    return grouped


def diagnostic_metrics(per_case: Sequence[dict[str, Sequence[float]]]) -> dict[str, float]:
    """Installed components' per-prompt diagnostics (`scoring.diagnostics`) as metrics: for each quantity, the
    mean over the records that report it of each record's mean over its prompts."""
    names = list(dict.fromkeys(name for d in per_case for name, values in d.items() if values))
    return {name: mean(mean(d[name]) for d in per_case if d.get(name)) for name in names}


def diagnostic_rows(case: str, diagnostics: dict[str, Sequence[float]]) -> list[dict[str, Any]]:
    """The per-record rows behind `diagnostic_metrics`: one `mean` row per quantity the record reports."""
    return [row(case, name, MEAN, mean(values), values) for name, values in diagnostics.items() if values]
