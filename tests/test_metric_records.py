"""Every suite's per-record rows reproduce its aggregate metrics (the intervals describe the printed numbers)."""

from __future__ import annotations

import pytest

from kepitfalls.metrics.conflict import ConflictScores, conflict_metrics, conflict_records
from kepitfalls.metrics.counterfact import CaseScores, PromptScore, counterfact_metrics, counterfact_records
from kepitfalls.metrics.locality import EditScores, locality_metrics, locality_records
from kepitfalls.metrics.mquake import Attempt, Hop, InstanceScores, mquake_metrics, mquake_records
from kepitfalls.metrics.portability import RecordScores, portability_metrics, portability_records
from kepitfalls.metrics.records import BINARY, by_metric, statistic
from kepitfalls.metrics.round import RoundScores, round_metrics, round_records


def _check(metrics, rows, without_rows=()):
    grouped = by_metric(rows)
    assert set(grouped) == set(metrics) - set(without_rows)
    for name, of_metric in grouped.items():
        assert statistic(of_metric) == pytest.approx(metrics[name], rel=1e-12, abs=1e-12), name
        assert len({r["case"] for r in of_metric}) == len(of_metric), name  # one row per record
    return grouped


def test_counterfact_rows():
    s = PromptScore
    cases = [
        CaseScores(s(0.6, 0.1), (s(0.5, 0.2), s(0.1, 0.3)), (s(0.1, 0.4), s(0.3, 0.2), s(0.2, 0.2)), (s(0.1, 0.5),), (0.1, 0.2, 0.3), (0.5,)),
        CaseScores(s(0.1, 0.2), (s(0.4, 0.2),), (s(0.3, 0.1),), (s(0.4, 0.2), s(0.1, 0.2)), (0.7,), (0.2, 0.4)),
    ]
    grouped = _check(counterfact_metrics(cases, 50), counterfact_records(cases, ["1", "2"], 50), ("Score", "cases"))
    assert grouped["ES"][0]["kind"] == BINARY and grouped["NS"][0]["prompts"] == [100.0, 0.0, 0.0]


def test_portability_rows():
    records = [RecordScores("SR", (1.0, 0.5), (1.0, 0.0)), RecordScores("SR", (0.0,), (0.0,)), RecordScores("OH", (0.25,), (1.0,))]
    ids = ["SR/1", "SR/2", "OH/3"]
    _check(portability_metrics(records, "_pre"), portability_records(records, ids, "_pre"))


def test_locality_rows():
    edits = [EditScores("OA", (1.0, 0.5), 0.6), EditScores("DN", (0.25,), 0.5), EditScores("DN", (1.0, 1.0, 0.0), 0.4)]
    _check(locality_metrics(edits, 0.55), locality_records(edits, ["OA/1", "DN/2", "DN/3"]), ("OT_pre", "OT_ratio", "cases"))


def test_round_rows():
    cases = [
        RoundScores("easy", 0.5, 0.1, 0.2, 0.4, (0.1, 0.3), 0.3, (0.2, 0.2)),
        RoundScores("hard", 0.1, 0.4, 0.6, 0.1, (0.05,), 0.5, (0.1,)),
        RoundScores("hard", 0.7, 0.1, 0.5, 0.2, (0.3, 0.3, 0.1), 0.4, (0.2, 0.4, 0.2)),
    ]
    counts = ("cases", "easy_cases", "hard_cases")
    grouped = _check(round_metrics(cases), round_records(cases, ["e/1", "h/2", "h/3"]), counts)
    assert grouped["FR"][0]["kind"] == BINARY and grouped["Succ"][0]["kind"] != BINARY  # Succ scores half points


def test_conflict_rows():
    cases = [
        ConflictScores("reverse", 0.5, 0.2, 0.3, implied_theta2=0.1),
        ConflictScores("reverse", 0.4, 0.5, 0.1, implied_theta2=0.6),
        ConflictScores("composite", 0.5, 0.3, 0.2, implied_theta2=0.4, tied_theta0=0.2, tied_theta2=0.1, tied_e2only=0.3),
        ConflictScores("coverage", 0.6, 0.1, 0.4, e1_e2only=0.1, e2_e2only=0.5),
    ]
    _check(conflict_metrics(cases), conflict_records(cases, ["r/1", "r/2", "c/1", "v/1"]), ("reverse_cases", "composite_cases", "coverage_cases"))


def test_mquake_rows_pool_edits_and_count_instances():
    hit, miss = Attempt("Paris", ("Paris",)), Attempt("Rome", ("Paris",))
    instances = [
        InstanceScores((hit, hit, miss), (Hop(hit, True), Hop(hit, False)), (miss, hit), (miss,)),
        InstanceScores((miss,), (Hop(miss, True),), (miss,), (Attempt("Thoughts\nAnswer: Paris", ("Paris",)),)),
    ]
    grouped = _check(mquake_metrics(instances), mquake_records(instances, ["1", "2"]), ("cases", "edits"))
    assert len(grouped["EW"]) == 2  # n counts instances, not edits
