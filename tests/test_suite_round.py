"""The RoundEdit suite end to end on tiny-gptj (random weights) and two real records of each kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mirror import MIRROR

from fixtures_models import build_tiny, changed_tensors, single_thread, snapshot  # noqa: F401
from fixtures_router import TakesEverything
from kepitfalls.data.pitfalls import BENCHMARK, Entity, Relation, RoundEdit, RoundEditRecord
from kepitfalls.deltas import DenseDelta, MemoryDelta
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.router import installed
from kepitfalls.suites import round as round_suite
from kepitfalls.suites.common import applied, chain, load_records, save_records

RAW_ROOT = MIRROR
CONFIG = round_suite.Config(benchmark=BENCHMARK, model_folder="GPT-J", kinds=["easy", "hard"], subset_size=2, seed=0,
                            known_only=False)
FT_HPARAMS = FTHparams(layers=[1], num_steps=2, lr=1e-3, weight_decay=0.0, objective="target_new", norm_constraint=None)
NAMES = ("Succ", "D", "D_js", "IR", "FR")
KEYS = {f"{prefix}{name}" for prefix in ("", "easy_", "hard_") for name in (*NAMES, "cases")}

pytestmark = pytest.mark.skipif(not (RAW_ROOT / BENCHMARK).is_dir(), reason="no benchmark mirror")


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return build_tiny("tiny-gptj")


@pytest.fixture(scope="module")
def items(lm: LoadedModel) -> list[round_suite.RoundItem]:
    return round_suite.select(lm, RAW_ROOT, CONFIG)


def test_select_takes_size_records_of_each_kind(items: list[round_suite.RoundItem]) -> None:
    assert [item.kind for item in items] == ["easy", "easy", "hard", "hard"]
    assert all(len(item.paraphrases) == 10 for item in items)


def test_records_round_trip_through_json(items: list[round_suite.RoundItem], tmp_path: Path) -> None:
    save_records(tmp_path / "records.json", "round", items, CONFIG.model_dump())
    assert load_records(tmp_path / "records.json", round_suite.RECORD_TYPE) == items


def test_others_drop_only_the_first_occurrence_of_the_object() -> None:
    record = RoundEditRecord(
        case_id=0,
        type="1-3@P69",
        edit=RoundEdit(
            relation=Relation("P69", "{} was educated at", "Where did {} study?", "educated at"),
            subject=Entity("Q1", "Somebody"),
            new_object=Entity("Q9", "Elsewhere"),
            object=Entity("Q2", "Here"),
        ),
        true_objects=(Entity("Q3", "There"), Entity("Q2", "Here"), Entity("Q2b", "Here")),
    )
    assert round_suite.others(record) == ["There", "Here"]  # list.remove drops the first match only


def test_edit_cases_go_there_and_back(items: list[round_suite.RoundItem]) -> None:
    cases = round_suite.edit_cases(items)
    ids = [case.case_id for case in cases]
    assert len(set(ids)) == len(ids) == 2 * len(items)
    by_id = {case.case_id: case for case in cases}
    for item in items:
        prefix = f"{item.kind}/{item.record.case_id}"
        edit = item.record.edit
        (e1,), (e2,) = by_id[f"{prefix}/e1"].requests, by_id[f"{prefix}/e2"].requests
        assert by_id[f"{prefix}/e1"].base is None and by_id[f"{prefix}/e2"].base == f"{prefix}/e1"
        assert ids.index(f"{prefix}/e1") < ids.index(f"{prefix}/e2")
        assert (e1.prompt, e1.subject, e1.target_new, e1.target_true) == (
            edit.relation.prompt, edit.subject.label, edit.new_object.label, edit.object.label)
        assert (e2.prompt, e2.subject, e2.target_new, e2.target_true) == (
            edit.relation.prompt, edit.subject.label, edit.object.label, edit.new_object.label)


def test_pre_scores_hold_every_object_of_every_record(lm: LoadedModel, items: list[round_suite.RoundItem]) -> None:
    pre = round_suite.pre_scores(lm, items)
    json.dumps(pre.values)
    theta0 = pre.values["theta0"]
    assert set(theta0) == {f"{item.kind}/{item.record.case_id}" for item in items}
    for item in items:
        entry = theta0[f"{item.kind}/{item.record.case_id}"]
        assert len(entry["others"]) == len(item.record.true_objects) - 1
        assert all(0 < v <= 1 for v in (entry["intermediate"], entry["original"], *entry["others"]))
        (alone,) = round_suite.scores(lm, [(item, item.record.edit.object.label)])
        assert entry["original"] == pytest.approx(alone, rel=1e-5)


def test_evaluate_returns_every_metric_and_reverts(lm: LoadedModel, items: list[round_suite.RoundItem]) -> None:
    cases = round_suite.edit_cases(items)
    pre = round_suite.pre_scores(lm, items)
    method = FineTune(FT_HPARAMS)
    by_id = {case.case_id: case for case in cases}
    deltas = {}
    for case in cases:
        with applied(lm, deltas, chain(by_id, case.case_id)[:-1]):
            deltas[case.case_id] = method.edit(lm, list(case.requests))
    before = snapshot(lm.model)
    metrics = round_suite.evaluate(lm, items, deltas, pre).metrics
    assert changed_tensors(lm.model, before) == set()
    assert set(metrics) == KEYS
    for prefix in ("", "easy_", "hard_"):
        for name in ("Succ", "IR", "FR"):
            assert 0 <= metrics[prefix + name] <= 100
        assert 0 <= metrics[prefix + "D"] <= metrics[prefix + "D_js"] <= 100 * 0.6932  # JS ≤ ln 2; D = JS/n ≤ JS
    assert metrics["cases"] == 4.0 and metrics["easy_cases"] == metrics["hard_cases"] == 2.0
    assert metrics["Succ"] == pytest.approx((metrics["easy_Succ"] + metrics["hard_Succ"]) / 2)


def test_no_op_edits_leave_no_distortion_and_ignore_nothing(lm: LoadedModel, items: list[round_suite.RoundItem]) -> None:
    """Empty deltas: θ2 = θ0, scored in identical calls, so D, IR and FR are exactly 0 (no batching noise
    for IR's strict `>` to pick up), and no edit succeeds: o and o* keep their unedited order on θ1 and θ2."""
    deltas = {case.case_id: DenseDelta({}) for case in round_suite.edit_cases(items)}
    metrics = round_suite.evaluate(lm, items, deltas, round_suite.pre_scores(lm, items)).metrics
    for name in ("D", "D_js", "IR", "FR"):
        assert metrics[name] == 0.0, name
    assert metrics["Succ"] == 50.0  # exactly one of "o* > o" and "o > o*" holds on the unedited model


def test_a_memory_methods_routing_is_counted_per_state_and_prompt_set(lm: LoadedModel, items: list[round_suite.RoundItem]) -> None:
    cases = round_suite.edit_cases(items)
    pre = round_suite.pre_scores(lm, items)
    plain = round_suite.evaluate(lm, items, {case.case_id: DenseDelta({}) for case in cases}, pre).metrics
    with installed(lm.model, TakesEverything()):
        metrics = round_suite.evaluate(lm, items, {case.case_id: MemoryDelta("TEST", [{}]) for case in cases}, pre).metrics
    routed = {name: value for name, value in metrics.items() if name.startswith("routed_")}
    assert routed == {f"routed_{state}_{kind}": 100.0 for state in ("theta2", "theta1") for kind in ("rewrite", "paraphrase")}
    assert {name: value for name, value in metrics.items() if name not in routed} == plain
