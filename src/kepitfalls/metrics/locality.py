"""Locality: Other-Attribution (OA), Distract-Neighbor (DN) and Other-Task (OT) of Yao et al. 2023 (METRICS.md §1.3).

OA and DN follow EasyEdit's locality score (`easyeditor/evaluate/evaluate.py::compute_locality_quality` →
`evaluate_utils.py::test_prediction_acc(..., locality=True)`, compared in `editors/editor.py` as
`np.mean(np.equal(pre_logits, post_logits))`): LocAgree, the share of teacher-forced positions of the
continuation `tok(" " + y)` whose argmax token is the same before and after the edit,

    LocAgree(x, y) = (1/T) · Σ_j 1[ argmax_θ0(x ⊕ y_<j) == argmax_θe(x ⊕ y_<j) ],

averaged over a record's prompts, then over records, ×100 (`editors/utils.py::summary_metrics`).

OT is PIQA accuracy (Bisk et al. 2020) scored as lm-evaluation-harness scores its `piqa` task (`acc`):
context `"Question: {goal}\\nAnswer:"`, each solution continued with a leading space, the prediction the
solution with the larger summed log-probability Σ_j log p(sol_j | context ⊕ sol_<j) (`np.argmax`, so a tie
picks sol1). Yao et al.'s exact PIQA protocol is unverified. OT averages, over the edited records, the
accuracy after that one edit, ×100; `OT_pre` is the unedited accuracy and `OT_ratio` = OT / OT_pre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import mean
from typing import Any

from kepitfalls.metrics.grouping import group_by_label
from kepitfalls.metrics.records import MEAN, row

COLUMNS = ("OA", "DN")


@dataclass(frozen=True)
class EditScores:
    """What one edit did: LocAgree per probe of its record, and PIQA accuracy on the edited model."""

    column: str  # "OA" or "DN"
    agreement: tuple[float, ...]  # LocAgree per probe, in [0, 1]
    piqa_accuracy: float  # in [0, 1]


def loc_agree(pre_argmax: Sequence[int], post_argmax: Sequence[int]) -> float:
    """The share of positions whose argmax token id is unchanged (METRICS.md §1.3)."""
    if len(pre_argmax) != len(post_argmax) or not pre_argmax:
        raise ValueError(f"argmax sequences differ in length or are empty: {len(pre_argmax)} vs {len(post_argmax)}")
    return sum(a == b for a, b in zip(pre_argmax, post_argmax)) / len(pre_argmax)


def piqa_choice(loglik_sol1: float, loglik_sol2: float) -> int:
    """The predicted solution (0 = sol1, 1 = sol2): the larger summed log-probability; a tie picks sol1."""
    return 0 if loglik_sol1 >= loglik_sol2 else 1


def piqa_accuracy(logliks: Sequence[tuple[float, float]], labels: Sequence[int]) -> float:
    """The share of items whose predicted solution is the labelled one, in [0, 1]."""
    if len(logliks) != len(labels) or not labels:
        raise ValueError(f"{len(logliks)} scored PIQA items for {len(labels)} labels")
    return mean(float(piqa_choice(a, b) == label) for (a, b), label in zip(logliks, labels))


def locality_metrics(edits: Sequence[EditScores], ot_pre: float) -> dict[str, float]:
    """OA and DN (LocAgree ×100, per column with records), OT, OT_pre (×100) and OT_ratio.

    `ot_pre` is the unedited PIQA accuracy in [0, 1]; OT_ratio is left out when it is 0 (undefined).
    """
    metrics: dict[str, float] = {}
    for column, of_column in group_by_label(edits, lambda e: e.column, COLUMNS, "locality").items():
        if any(not e.agreement for e in of_column):
            raise ValueError(f"a {column} record has no probes")
        metrics[column] = 100 * mean(mean(e.agreement) for e in of_column)
    metrics["OT"] = 100 * mean(e.piqa_accuracy for e in edits)
    metrics["OT_pre"] = 100 * ot_pre
    if ot_pre > 0:
        metrics["OT_ratio"] = metrics["OT"] / metrics["OT_pre"]
    metrics["cases"] = float(len(edits))
    return metrics


def locality_records(edits: Sequence[EditScores], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The per-edit rows behind `locality_metrics`: OA/DN (LocAgree per probe ×100) and OT (PIQA accuracy ×100)."""
    rows = []
    for case_id, e in zip(ids, edits, strict=True):
        if not e.agreement:
            raise ValueError(f"locality record {case_id} has no probes")
        probes = [100 * a for a in e.agreement]
        rows.append(row(case_id, e.column, MEAN, mean(probes), probes))
        rows.append(row(case_id, "OT", MEAN, 100 * e.piqa_accuracy))
    return rows
