"""95% intervals from per-record scores: Clopper–Pearson for one yes/no outcome per record, a seeded
percentile bootstrap over records for everything else, and the paired bootstrap of a difference between two
methods on the records both were evaluated on. Records, not prompts, are the unit: prompts of one record
share its edit and are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from kepitfalls.metrics.records import BINARY, POOLED, YES, statistic

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic over `n` records and its 95% interval."""

    value: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def clopper_pearson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial proportion, in [0, 1]."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"Clopper–Pearson needs 0 <= successes <= n and n >= 1, got {successes}/{n}")
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def bootstrap(statistic_of: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, seed: int, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of a record-level bootstrap: `statistic_of` maps a (resamples, n) matrix of
    record indices to one statistic per resample. The same seed gives the same interval."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one record")
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = statistic_of(indices)
    alpha = 1 - level
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _resampled(rows: Sequence[dict[str, Any]]) -> Callable[[np.ndarray], np.ndarray]:
    """The metric recomputed on resampled records: mean of record values, or (pooled) of all their prompts."""
    if rows[0]["kind"] == POOLED:
        sums = np.array([sum(r["prompts"]) for r in rows])
        counts = np.array([len(r["prompts"]) for r in rows], dtype=float)
        return lambda idx: sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    values = np.array([r["value"] for r in rows])
    return lambda idx: values[idx].mean(axis=1)


def interval(rows: Sequence[dict[str, Any]], resamples: int, seed: int) -> Interval:
    """A metric's value over its records with its 95% interval, by the kind its rows declare."""
    if not rows:
        raise ValueError("no records to compute an interval from")
    n, value = len(rows), statistic(rows)
    if rows[0]["kind"] == BINARY:
        low, high = clopper_pearson(sum(r["value"] == YES for r in rows), n)
        return Interval(value, YES * low, YES * high, n)
    return Interval(value, *bootstrap(_resampled(rows), n, resamples, seed), n)


def paired_difference(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], resamples: int, seed: int) -> Interval:
    """metric(a) − metric(b) on the records both have (same case ids), with a paired bootstrap interval:
    each resample draws records and recomputes both methods' metric on them."""
    shared = sorted({r["case"] for r in a} & {r["case"] for r in b})
    if not shared:
        raise ValueError("the two methods share no records")
    by_case_a, by_case_b = {r["case"]: r for r in a}, {r["case"]: r for r in b}
    rows_a, rows_b = [by_case_a[c] for c in shared], [by_case_b[c] for c in shared]
    stat_a, stat_b = _resampled(rows_a), _resampled(rows_b)
    low, high = bootstrap(lambda idx: stat_a(idx) - stat_b(idx), len(shared), resamples, seed)
    return Interval(statistic(rows_a) - statistic(rows_b), low, high, len(shared))


def separating_n(difference: Interval) -> int | None:
    """The number of records at which this observed difference's interval would exclude 0, assuming its
    distance from the value to the bound on 0's side shrinks as 1/√n; None where no size would (no
    difference, or no spread to scale from: one record's interval is the point itself, which "excludes" 0
    whenever the two methods differ on it)."""
    if difference.n < 2:
        return None
    if difference.excludes_zero():
        return difference.n
    if difference.value == 0:
        return None
    near = difference.value - difference.low if difference.value > 0 else difference.high - difference.value
    return math.floor(difference.n * (near / abs(difference.value)) ** 2) + 1
