"""Locality OA/DN (LocAgree) and OT (PIQA accuracy) against values worked out by hand."""

from __future__ import annotations

import pytest

from kepitfalls.metrics.locality import (
    EditScores,
    loc_agree,
    locality_metrics,
    piqa_accuracy,
    piqa_choice,
)


def test_loc_agree_compares_pre_and_post_argmax_only() -> None:
    assert loc_agree([5, 9, 2], [5, 9, 2]) == 1.0
    assert loc_agree([5, 9, 2], [5, 1, 2]) == pytest.approx(2 / 3)
    assert loc_agree([5, 9, 2, 7], [1, 1, 1, 1]) == 0.0
    assert 100 * loc_agree([29, 234, 334], [29, 234, 333]) == pytest.approx(66.67, abs=0.01)
    with pytest.raises(ValueError):
        loc_agree([1, 2], [1])
    with pytest.raises(ValueError):
        loc_agree([], [])


def test_piqa_choice_takes_the_larger_sum_and_sol1_on_ties() -> None:
    assert piqa_choice(-3.0, -5.5) == 0
    assert piqa_choice(-7.25, -2.0) == 1
    assert piqa_choice(-4.0, -4.0) == 0  # np.argmax returns the first maximum


def test_piqa_accuracy_by_hand() -> None:
    # sums (sol1, sol2) and labels: predictions 0, 1, 0 (tie), 1 -> labels 0, 0, 0, 1 -> 3 of 4 right
    logliks = [(-3.0, -5.0), (-9.0, -1.0), (-2.0, -2.0), (-10.0, -6.5)]
    assert piqa_accuracy(logliks, [0, 0, 0, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        piqa_accuracy(logliks, [0, 1])


def test_locality_metrics_by_hand() -> None:
    edits = [
        EditScores("OA", agreement=(1.0, 0.5), piqa_accuracy=0.6),        # record mean 0.75
        EditScores("OA", agreement=(0.2,), piqa_accuracy=0.5),            # record mean 0.2
        EditScores("DN", agreement=(1.0, 1.0, 0.0, 0.5), piqa_accuracy=0.4),  # record mean 0.625
    ]
    m = locality_metrics(edits, ot_pre=0.6)
    # OA: (0.75 + 0.2) / 2 = 0.475, not the pooled (1 + 0.5 + 0.2) / 3 = 0.5667
    assert m["OA"] == pytest.approx(47.5)
    assert m["DN"] == pytest.approx(62.5)
    # OT: the mean over every edit (OA and DN alike) of the accuracy after it: (0.6 + 0.5 + 0.4) / 3 = 0.5
    assert m["OT"] == pytest.approx(50.0)
    assert m["OT_pre"] == pytest.approx(60.0)
    assert m["OT_ratio"] == pytest.approx(50.0 / 60.0)
    assert m["cases"] == 3.0
    assert set(m) == {"OA", "DN", "OT", "OT_pre", "OT_ratio", "cases"}


def test_ratio_is_left_out_when_the_unedited_accuracy_is_zero() -> None:
    m = locality_metrics([EditScores("DN", (1.0,), 0.25)], ot_pre=0.0)
    assert m == pytest.approx({"DN": 100.0, "OT": 25.0, "OT_pre": 0.0, "cases": 1.0})


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError):
        locality_metrics([], ot_pre=0.5)
    with pytest.raises(ValueError):
        locality_metrics([EditScores("OT", (1.0,), 0.5)], ot_pre=0.5)
    with pytest.raises(ValueError):
        locality_metrics([EditScores("OA", (), 0.5)], ot_pre=0.5)
