"""ConflictEdit: Conflict Score, Conflict Magnitude, Tied-Fact Damage and coverage Success (METRICS.md §2.3).

Follows `zjunlp/PitfallsKnowledgeEditing` `experiments/summarize.py` (and the score layout of
`experiments/evaluate_conflictedit.py`). Every input is a score S = the mean, over the rewrite prompt and the
relation's 10 paraphrases, of P̄(target | prompt); θ0 is the unedited model, θ1 = θ0 + e1, θ2 = θ1 + e2 and
θ_e2only = θ0 + e2. Per record, with e1 = (s1, r1, o1*) and e2 = (s2, r2, o2*):

- CS (explicit, the reference's default `--explicit true`) = 1[S_θ2(e2 fact) > S_θ2(e1 fact)], strict.
- CS (implicit) = 1[S_θ2(implied fact) > S_θ2(e1 fact)]; the implied fact is (r1, s2*, o1*) for reverse
  records and (r1, s1, o2*) for composite ones (the reference's `cs_post_edit` with `explicit` False).
- CM = max((S_θ1(e1) − S_θ2(e1)) / S_θ1(e1), −1): the relative drop of the first edit's target; clipped
  below at −1, as the reference's `max(..., -1)`.
- TFD = (S_θ0(t) − S_θ2(t)) / S_θ0(t) for the tied fact t = triples[0] with its own object (the
  reference's "FFD"); NOT clipped, so it can be very negative.
- coverage Success = 1[S_θe2only(e2 fact) > S_θe2only(e1 fact)], strict.

Each is averaged over records and reported ×100, as the survey's Table 3 prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Any, Sequence

from kepitfalls.metrics.grouping import group_by_label
from kepitfalls.metrics.records import MEAN, binary, row

KINDS = ("reverse", "composite", "coverage")
#: The kinds whose second edit has an "implicit" CS variant in the reference.
IMPLICIT_KINDS = ("reverse", "composite")


@dataclass(frozen=True)
class ConflictScores:
    """The S values of one ConflictEdit record (None where its kind does not use them)."""

    kind: str
    e1_theta1: float  # S_θ1(e1 fact, o1*): the reference's CM_pre
    e1_theta2: float  # S_θ2(e1 fact, o1*): the reference's CM_post (= CS_pre)
    e2_theta2: float  # S_θ2(e2 fact, o2*): the reference's explicit CS_post
    implied_theta2: float | None = None  # S_θ2 of the implied fact: the implicit CS_post (reverse, composite)
    tied_theta0: float | None = None  # composite: S_θ0(t), the reference's fact_0
    tied_theta2: float | None = None  # composite: S_θ2(t), fact_2
    tied_e2only: float | None = None  # composite: S_θe2only(t), fact_o
    e1_e2only: float | None = None  # coverage: S_θe2only(e1 fact), S_pre
    e2_e2only: float | None = None  # coverage: S_θe2only(e2 fact), S_post


def conflict_score(s_newer: float, s_older: float) -> float:
    """1 where the newer fact scores strictly higher than the older one, else 0 (ties count as 0)."""
    return 1.0 if s_newer > s_older else 0.0


def conflict_magnitude(s_theta1: float, s_theta2: float) -> float:
    """max((S_θ1 − S_θ2) / S_θ1, −1): the relative drop of the first edit's target, clipped at −1."""
    return max((s_theta1 - s_theta2) / s_theta1, -1.0)


def tied_fact_damage(s_theta0: float, s_theta2: float) -> float:
    """(S_θ0 − S_θ2) / S_θ0 for the tied fact, unclipped (a rise of the tied fact gives a value below −1)."""
    return (s_theta0 - s_theta2) / s_theta0


def _required(value: float | None, what: str, kind: str) -> float:
    if value is None:
        raise ValueError(f"a {kind} ConflictEdit record is missing {what}")
    return value


def _kind_metrics(kind: str, cases: list[ConflictScores]) -> dict[str, float]:
    metrics = {
        f"{kind}_CS": 100 * mean(conflict_score(c.e2_theta2, c.e1_theta2) for c in cases),
        f"{kind}_CM": 100 * mean(conflict_magnitude(c.e1_theta1, c.e1_theta2) for c in cases),
        f"{kind}_cases": float(len(cases)),
    }
    if kind in IMPLICIT_KINDS:
        metrics[f"{kind}_CS_implicit"] = 100 * mean(
            conflict_score(_required(c.implied_theta2, "the implied fact's score", kind), c.e1_theta2) for c in cases
        )
    if kind == "composite":
        tied0 = [_required(c.tied_theta0, "S_θ0 of the tied fact", kind) for c in cases]
        metrics["composite_TFD"] = 100 * mean(
            tied_fact_damage(t0, _required(c.tied_theta2, "S_θ2 of the tied fact", kind)) for t0, c in zip(tied0, cases)
        )
        metrics["composite_TFD_e2only"] = 100 * mean(
            tied_fact_damage(t0, _required(c.tied_e2only, "S_θe2only of the tied fact", kind)) for t0, c in zip(tied0, cases)
        )
    if kind == "coverage":
        metrics["coverage_Succ"] = 100 * mean(
            conflict_score(_required(c.e2_e2only, "S_θe2only(e2)", kind), _required(c.e1_e2only, "S_θe2only(e1)", kind))
            for c in cases
        )
    return metrics


def conflict_metrics(cases: list[ConflictScores]) -> dict[str, float]:
    """Per kind present: `<kind>_CS`, `<kind>_CM` (×100), `<kind>_CS_implicit` (reverse, composite),
    `composite_TFD` and `composite_TFD_e2only` (×100, unclipped), `coverage_Succ` (×100), `<kind>_cases`."""
    metrics: dict[str, float] = {}
    for kind, of_kind in group_by_label(cases, lambda c: c.kind, KINDS, "ConflictEdit").items():
        metrics.update(_kind_metrics(kind, of_kind))
    return metrics


def conflict_records(cases: Sequence[ConflictScores], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The per-record rows behind `conflict_metrics`: CS and coverage Succ binary, CM and TFD ×100 per record."""
    rows = []
    for case_id, c in zip(ids, cases, strict=True):
        kind = c.kind
        rows.append(binary(case_id, f"{kind}_CS", bool(conflict_score(c.e2_theta2, c.e1_theta2))))
        rows.append(row(case_id, f"{kind}_CM", MEAN, 100 * conflict_magnitude(c.e1_theta1, c.e1_theta2)))
        if kind in IMPLICIT_KINDS:
            implied = _required(c.implied_theta2, "the implied fact's score", kind)
            rows.append(binary(case_id, f"{kind}_CS_implicit", bool(conflict_score(implied, c.e1_theta2))))
        if kind == "composite":
            tied0 = _required(c.tied_theta0, "S_θ0 of the tied fact", kind)
            for name, after in (("composite_TFD", c.tied_theta2), ("composite_TFD_e2only", c.tied_e2only)):
                rows.append(row(case_id, name, MEAN, 100 * tied_fact_damage(tied0, _required(after, f"the tied fact's score for {name}", kind))))
        if kind == "coverage":
            e2, e1 = _required(c.e2_e2only, "S_θe2only(e2)", kind), _required(c.e1_e2only, "S_θe2only(e1)", kind)
            rows.append(binary(case_id, "coverage_Succ", bool(conflict_score(e2, e1))))
    return rows
