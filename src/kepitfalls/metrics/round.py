"""RoundEdit: Success, Distortion, Ignore Rate and Failure Rate (METRICS.md §3.2).

Follows `zjunlp/PitfallsKnowledgeEditing` `experiments/summarize.py` (scores laid out as
`experiments/py/eval_utils_roundedit.py` and `experiments/evaluate_model.py` produce them). Every input is a
score S = the mean, over the rewrite prompt and the relation's 10 paraphrases, of P̄(object | prompt); θ0 is
the unedited model, θ1 = θ0 + e1 (o → o*), θ2 = θ1 + e2 (o* → o). Per record, with "others" = the
record's true objects with the first occurrence of o removed (the reference's `list.remove`):

- Succ = 0.5·1[S_θ1(o*) > S_θ1(o)] + 0.5·1[S_θ2(o) > S_θ2(o*)], strict (both comparisons within one model).
- p = L1-normalised [S_θ2(o)] + [S_θ2(o') for others], q = the same on θ0, m = (p + q) / 2;
  JS = (KL(p‖m) + KL(q‖m)) / 2 in nats.
- D = JS / n with n = len(p) = 1 + |others|: the reference's `KLDivLoss(reduction='batchmean')` on 1-D
  tensors divides the summed KL by the tensor length. `D_js` is the true JS, without that division.
- IR = |{o' ∈ others : S_θ0(o') > S_θ2(o')}| / |others| (strict), FR = 1[IR > 0.5] (strict).

Each is averaged over records and reported ×100, as the survey's Table 4 prints them (the reference
summarizer prints fractions; D = 13.95 for ROME in the survey is 0.1395 there). `D_js` is scaled the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean
from typing import Any, Sequence

from kepitfalls.metrics.grouping import group_by_label
from kepitfalls.metrics.records import BINARY, MEAN, row

KINDS = ("easy", "hard")
#: torch.nn.functional.normalize's default eps: the L1 norm is clamped below at it.
NORMALIZE_EPS = 1e-12


@dataclass(frozen=True)
class RoundScores:
    """The S values of one RoundEdit record; o is the original object, o* the intermediate one."""

    kind: str
    theta1_intermediate: float  # S_θ1(o*): the reference's edit1 target_new
    theta1_original: float  # S_θ1(o): edit1 target_true
    theta2_original: float  # S_θ2(o): edit2 target_new
    theta2_intermediate: float  # S_θ2(o*): edit2 target_true
    theta2_others: tuple[float, ...]  # S_θ2(o') for the others, in true_objects order
    theta0_original: float  # S_θ0(o): the separate unedited run's target_new
    theta0_others: tuple[float, ...]  # S_θ0(o')


def round_success(theta1_intermediate: float, theta1_original: float, theta2_original: float, theta2_intermediate: float) -> float:
    """Half a point for each edit that puts its own target strictly above the object it replaces."""
    return 0.5 * (theta1_intermediate > theta1_original) + 0.5 * (theta2_original > theta2_intermediate)


def l1_normalize(values: Sequence[float]) -> list[float]:
    """values / max(Σ|v|, 1e-12), as `F.normalize(x, p=1, dim=0)`."""
    norm = max(sum(abs(v) for v in values), NORMALIZE_EPS)
    return [v / norm for v in values]


def _kl(p: Sequence[float], m: Sequence[float]) -> float:
    """Σ p·(ln p − ln m), with 0·ln 0 = 0 (as KLDivLoss's xlogy)."""
    return sum(pi * (math.log(pi) - math.log(mi)) for pi, mi in zip(p, m) if pi > 0)


def js_divergence(p_scores: Sequence[float], q_scores: Sequence[float]) -> float:
    """The Jensen–Shannon divergence (natural log) of the L1-normalised score vectors."""
    if len(p_scores) != len(q_scores) or not p_scores:
        raise ValueError(f"score vectors differ in length or are empty: {len(p_scores)} vs {len(q_scores)}")
    p, q = l1_normalize(p_scores), l1_normalize(q_scores)
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return (_kl(p, m) + _kl(q, m)) / 2


def reference_distortion(p_scores: Sequence[float], q_scores: Sequence[float]) -> float:
    """The reference's `js_div`: JS divided by the vector length n (`batchmean` on a 1-D tensor)."""
    return js_divergence(p_scores, q_scores) / len(p_scores)


def ignore_rate(others_theta0: Sequence[float], others_theta2: Sequence[float]) -> float:
    """The share of the other true objects whose score fell strictly after the round trip."""
    if len(others_theta0) != len(others_theta2) or not others_theta0:
        raise ValueError(f"others differ in length or are empty: {len(others_theta0)} vs {len(others_theta2)}")
    return sum(before > after for before, after in zip(others_theta0, others_theta2)) / len(others_theta0)


def failure(ignore_rate_value: float) -> float:
    """1 where more than half of the other objects were ignored (IR > 0.5, strict), else 0."""
    return 1.0 if ignore_rate_value > 0.5 else 0.0


def _record(c: RoundScores) -> dict[str, float]:
    p = [c.theta2_original, *c.theta2_others]
    q = [c.theta0_original, *c.theta0_others]
    ir = ignore_rate(c.theta0_others, c.theta2_others)
    return {
        "Succ": round_success(c.theta1_intermediate, c.theta1_original, c.theta2_original, c.theta2_intermediate),
        "D": reference_distortion(p, q),
        "D_js": js_divergence(p, q),
        "IR": ir,
        "FR": failure(ir),
    }


def _summary(rows: list[dict[str, float]], prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}{name}": 100 * mean(row[name] for row in rows) for name in ("Succ", "D", "D_js", "IR", "FR")}
    metrics[f"{prefix}cases"] = float(len(rows))
    return metrics


def round_metrics(cases: list[RoundScores]) -> dict[str, float]:
    """Pooled `Succ`, `D` (reference: JS/n), `D_js` (true JS), `IR`, `FR`, all ×100, over every record;
    the same per kind as `easy_Succ`, `hard_D`, ...; and the record counts (`cases`, `easy_cases`, ...)."""
    rows = [(c.kind, _record(c)) for c in cases]
    groups = group_by_label(rows, lambda row: row[0], KINDS, "RoundEdit")
    metrics = _summary([record for _, record in rows])
    for kind, of_kind in groups.items():
        metrics.update(_summary([record for _, record in of_kind], f"{kind}_"))
    return metrics


#: FR is one yes/no outcome per record; Succ (half points), D, D_js and IR (shares) are not.
_KIND = {"Succ": MEAN, "D": MEAN, "D_js": MEAN, "IR": MEAN, "FR": BINARY}


def round_records(cases: list[RoundScores], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The per-record rows behind `round_metrics`, ×100: pooled (`Succ`) and per kind (`easy_Succ`)."""
    rows = []
    for case_id, c in zip(ids, cases, strict=True):
        for name, value in _record(c).items():
            for prefix in ("", f"{c.kind}_"):
                rows.append(row(case_id, f"{prefix}{name}", _KIND[name], 100 * value))
    return rows
