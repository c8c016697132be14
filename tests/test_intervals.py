"""The interval maths against known values, and the bootstrap's determinism."""

from __future__ import annotations

import pytest

from kepitfalls.metrics.records import BINARY, MEAN, POOLED, binary, row
from kepitfalls.stats.intervals import Interval, clopper_pearson, interval, paired_difference, separating_n


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 10, 0.0, 0.308497), (5, 10, 0.187086, 0.812914), (10, 10, 0.691503, 1.0), (1, 1, 0.025, 1.0)],
)
def test_clopper_pearson_known_values(k, n, low, high):
    assert clopper_pearson(k, n) == pytest.approx((low, high), abs=1e-6)


def test_clopper_pearson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="3/2"):
        clopper_pearson(3, 2)


def test_binary_rows_use_clopper_pearson_scaled_to_100():
    rows = [binary(str(i), "ES", i < 5) for i in range(10)]
    result = interval(rows, resamples=2000, seed=0)
    assert (result.value, result.n) == (50.0, 10)
    assert (result.low, result.high) == pytest.approx((18.7086, 81.2914), abs=1e-4)


def _continuous(values, metric="NM"):
    return [row(str(i), metric, MEAN, v) for i, v in enumerate(values)]


def test_bootstrap_is_deterministic_for_a_seed_and_depends_on_it():
    rows = _continuous([1.0, 5.0, 2.0, 8.0, 3.0, 9.0, 4.0])
    first, again, other = interval(rows, 2000, 0), interval(rows, 2000, 0), interval(rows, 2000, 1)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low < first.value < first.high


def test_bootstrap_of_constant_records_has_no_width():
    assert interval(_continuous([7.0] * 5), 2000, 0) == Interval(7.0, 7.0, 7.0, 5)


def test_pooled_rows_resample_records_not_prompts():
    rows = [row("a", "EW", POOLED, 100.0, [100.0, 100.0, 100.0]), row("b", "EW", POOLED, 0.0, [0.0])]
    result = interval(rows, 2000, 0)
    assert result.value == 75.0  # 3 of 4 edits
    assert (result.low, result.high) == (0.0, 100.0)  # a resample of "b" alone or "a" alone


def test_paired_difference_uses_shared_records_only():
    a = _continuous([10.0, 20.0, 30.0, 99.0])
    b = _continuous([9.0, 18.0, 27.0])  # no record "3"
    diff = paired_difference(a, b, 2000, 0)
    assert diff.n == 3 and diff.value == pytest.approx(2.0)
    assert 0 < diff.low <= diff.high  # every shared record favours a: every resample does too


def test_separating_n_scales_with_the_squared_ratio():
    assert separating_n(Interval(2.0, -2.0, 3.0, 10)) == 41  # the bound 4 below the value = 2 x the difference: > 4 x n
    assert separating_n(Interval(-2.0, -3.0, 0.0, 10)) == 11  # the bound touches 0: one record more
    assert separating_n(Interval(5.0, 1.0, 9.0, 10)) == 10  # already separated
    assert separating_n(Interval(0.0, -1.0, 1.0, 10)) is None
    assert separating_n(Interval(40.0, 40.0, 40.0, 1)) is None  # one record: its "interval" is the point, no spread


def test_binary_rows_refuse_other_values():
    with pytest.raises(ValueError, match="case 3"):
        row("3", "FR", BINARY, 50.0)
