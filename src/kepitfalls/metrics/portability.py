"""Portability: Subject-Replace (SR), Reverse-Relation (RR) and One-Hop (OH) of Yao et al. 2023 (METRICS.md §2.1).

Follows EasyEdit (`easyeditor/evaluate/portability_evaluate.py::compute_portability_quality` at the initial
commit `a781d66`, and `evaluate.py::compute_portability_quality` → `evaluate_utils.py::test_prediction_acc`
at HEAD): a probe scores TokAcc, the share of the answer's tokens (`tok(" " + answer)`) that are the
teacher-forced argmax after the portability prompt; a record scores the mean over its probes and a column
the mean over its records (`editors/utils.py::summary_metrics`), ×100:

    Port_column = 100 · mean_records( mean_probes TokAcc_θe(answer | prompt) )

As METRICS.md recommends, the exact match of a greedy generation of len(answer tokens) new tokens with the
answer (both stripped of surrounding whitespace) is logged beside it as `<column>_em`, averaged the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import mean
from typing import Any

from kepitfalls.metrics.grouping import group_by_label
from kepitfalls.metrics.records import MEAN, row

COLUMNS = ("SR", "RR", "OH")


@dataclass(frozen=True)
class RecordScores:
    """One record's probes, scored on one model state."""

    column: str  # "SR", "RR" or "OH"
    token_accuracy: tuple[float, ...]  # TokAcc per probe, in [0, 1]
    exact_match: tuple[float, ...]  # 1.0 / 0.0 per probe


def exact_match(generated: str, answer: str) -> float:
    """1.0 when the greedy continuation is the answer once both are stripped of surrounding whitespace."""
    return float(generated.strip() == answer.strip())


def _column_mean(values: Sequence[Sequence[float]]) -> float:
    """100 × the mean over records of each record's mean over its probes."""
    if any(not v for v in values):
        raise ValueError("a record has no portability probes")
    return 100 * mean(mean(v) for v in values)


def portability_metrics(records: Sequence[RecordScores], suffix: str = "") -> dict[str, float]:
    """`<column>` (TokAcc) and `<column>_em` (exact match), ×100, for every column with records.

    `suffix` names the model state ("" after the edit, "_pre" for the unedited model): `SR_pre`, `SR_em_pre`.
    """
    metrics: dict[str, float] = {}
    for column, rows in group_by_label(records, lambda r: r.column, COLUMNS, "portability").items():
        metrics[f"{column}{suffix}"] = _column_mean([r.token_accuracy for r in rows])
        metrics[f"{column}_em{suffix}"] = _column_mean([r.exact_match for r in rows])
    return metrics


def portability_records(records: Sequence[RecordScores], ids: Sequence[str], suffix: str = "") -> list[dict[str, Any]]:
    """The per-record rows behind `portability_metrics`: each record's probes ×100 and their mean."""
    rows = []
    for case_id, r in zip(ids, records, strict=True):
        for name, values in ((r.column, r.token_accuracy), (f"{r.column}_em", r.exact_match)):
            if not values:
                raise ValueError(f"portability record {case_id} has no probes")
            probes = [100 * v for v in values]
            rows.append(row(case_id, f"{name}{suffix}", MEAN, mean(probes), probes))
    return rows
