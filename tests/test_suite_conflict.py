"""The ConflictEdit suite end to end on tiny-gptj (random weights) and two real records of each kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mirror import MIRROR

from fixtures_models import build_deltas, build_tiny, changed_tensors, single_thread, snapshot  # noqa: F401
from fixtures_router import TakesEverything
from kepitfalls.data.pitfalls import BENCHMARK
from kepitfalls.deltas import DenseDelta, MemoryDelta
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.primitives import teacher_forced
from kepitfalls.scoring.router import installed
from kepitfalls.suites import conflict
from kepitfalls.suites.common import EditCase, load_records, save_records

RAW_ROOT = MIRROR
CONFIG = conflict.Config(benchmark=BENCHMARK, model_folder="GPT-J", kinds=["reverse", "composite", "coverage"],
                         subset_size=2, seed=0, known_only=False)
FT_HPARAMS = FTHparams(layers=[1], num_steps=2, lr=1e-3, weight_decay=0.0, objective="target_new", norm_constraint=None)
KEYS = {
    "reverse_CS", "reverse_CM", "reverse_CS_implicit", "reverse_cases",
    "composite_CS", "composite_CM", "composite_CS_implicit", "composite_TFD", "composite_TFD_e2only", "composite_cases",
    "coverage_CS", "coverage_CM", "coverage_Succ", "coverage_cases",
}

pytestmark = pytest.mark.skipif(not (RAW_ROOT / BENCHMARK).is_dir(), reason="no benchmark mirror")


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return build_tiny("tiny-gptj")


@pytest.fixture(scope="module")
def items(lm: LoadedModel) -> list[conflict.ConflictItem]:
    return conflict.select(lm, RAW_ROOT, CONFIG)


def _deltas(lm: LoadedModel, cases: list[EditCase]) -> dict:
    """As `editing.edit_suite` computes them: each case on its base chain."""
    return build_deltas(lm, cases, FineTune(FT_HPARAMS))


def test_select_takes_size_records_of_each_kind_with_their_paraphrases(items: list[conflict.ConflictItem]) -> None:
    assert [item.kind for item in items] == ["reverse"] * 2 + ["composite"] * 2 + ["coverage"] * 2
    for item in items:
        assert item.record.type == item.kind
        used = {e.relation.id for e in item.record.edits} | {item.record.triples[0].relation.id}
        assert set(item.paraphrases) == used
        assert all(len(p) == 10 for p in item.paraphrases.values())


def test_records_round_trip_through_json(items: list[conflict.ConflictItem], tmp_path: Path) -> None:
    save_records(tmp_path / "records.json", "conflict", items, CONFIG.model_dump())
    assert load_records(tmp_path / "records.json", conflict.RECORD_TYPE) == items


def test_edit_cases_are_sequential_pairs_plus_e2_alone(items: list[conflict.ConflictItem]) -> None:
    cases = conflict.edit_cases(items)
    ids = [case.case_id for case in cases]
    assert len(set(ids)) == len(ids)
    assert len(cases) == 2 * 2 + 3 * 2 + 3 * 2
    seen: set[str] = set()
    for case in cases:
        assert len(case.requests) == 1
        assert case.base is None or case.base in seen  # a base comes earlier
        seen.add(case.case_id)
    by_id = {case.case_id: case for case in cases}
    for item in items:
        prefix = f"{item.kind}/{item.record.case_id}"
        e1, e2 = item.record.edits
        assert by_id[f"{prefix}/e1"].base is None
        assert by_id[f"{prefix}/e2"].base == f"{prefix}/e1"
        for edit, request in ((e1, by_id[f"{prefix}/e1"].requests[0]), (e2, by_id[f"{prefix}/e2"].requests[0])):
            assert request.prompt == edit.relation.prompt
            assert request.subject == edit.subject.label
            assert request.target_new == edit.new_object.label
            assert request.target_true == edit.object.label
        if item.kind == "reverse":
            assert f"{prefix}/e2only" not in by_id
            assert e2.subject.label == e1.new_object.label  # e2 = (o1*, r⁻¹, s → s2*)
        else:
            assert by_id[f"{prefix}/e2only"].base is None
            assert by_id[f"{prefix}/e2only"].requests == by_id[f"{prefix}/e2"].requests


def test_score_is_the_mean_over_the_rewrite_prompt_and_ten_paraphrases(lm: LoadedModel, items: list[conflict.ConflictItem]) -> None:
    item = items[0]
    fact = conflict.e1_fact(item)
    prompts = [fact.template.replace("{}", fact.subject)] + [t.format(fact.subject) for t in item.paraphrases[fact.relation_id]]
    assert len(prompts) == 11
    probs = [r.mean_prob for r in teacher_forced(lm.model, lm.tokenizer, prompts, [fact.target] * 11)]
    assert conflict.scores(lm, [(item, fact)])[0] == pytest.approx(sum(probs) / 11, rel=1e-5)
    implied = conflict.KINDS["reverse"].theta2_facts(item)["implied_theta2"]  # (r1, s2*, o1*)
    e1, e2 = item.record.edits
    assert (implied.relation_id, implied.subject, implied.target) == (e1.relation.id, e2.new_object.label, e1.new_object.label)


def test_pre_scores_hold_the_tied_facts_of_composite_records(lm: LoadedModel, items: list[conflict.ConflictItem]) -> None:
    pre = conflict.pre_scores(lm, items)
    tied = pre.values["tied_theta0"]
    assert set(tied) == {f"composite/{item.record.case_id}" for item in items if item.kind == "composite"}
    assert all(0 < v <= 1 for v in tied.values())
    json.dumps(pre.values)


def test_evaluate_returns_every_metric_and_reverts(lm: LoadedModel, items: list[conflict.ConflictItem]) -> None:
    cases = conflict.edit_cases(items)
    pre = conflict.pre_scores(lm, items)
    deltas = _deltas(lm, cases)
    before = snapshot(lm.model)
    metrics = conflict.evaluate(lm, items, deltas, pre).metrics
    assert changed_tensors(lm.model, before) == set()
    assert set(metrics) == KEYS
    for key in ("reverse_CS", "reverse_CS_implicit", "composite_CS", "composite_CS_implicit", "coverage_CS", "coverage_Succ"):
        assert 0 <= metrics[key] <= 100, key
    for key in ("reverse_CM", "composite_CM", "coverage_CM"):
        assert -100 <= metrics[key] <= 100, key
    assert metrics["composite_TFD"] <= 100 and metrics["composite_TFD_e2only"] <= 100
    assert metrics["reverse_cases"] == metrics["composite_cases"] == metrics["coverage_cases"] == 2.0


def test_no_op_edits_leave_cm_and_tied_fact_damage_at_zero(lm: LoadedModel, items: list[conflict.ConflictItem]) -> None:
    """Empty deltas: θ0 = θ1 = θ2, so CM and TFD are 0 and the pre-scores line up with the post ones."""
    deltas = {case.case_id: DenseDelta({}) for case in conflict.edit_cases(items)}
    metrics = conflict.evaluate(lm, items, deltas, conflict.pre_scores(lm, items)).metrics
    assert metrics["composite_TFD"] == 0.0  # S_θ0 and S_θ2 of the tied fact come from identical calls
    for key in ("reverse_CM", "composite_CM", "coverage_CM", "composite_TFD_e2only"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-4), key


def test_unknown_kind_is_rejected(lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="unknown kind .sideways."):
        conflict.select(lm, RAW_ROOT, CONFIG.model_copy(update={"kinds": ["sideways"]}))


def test_a_memory_methods_routing_is_counted_per_state_and_fact(lm: LoadedModel, items: list[conflict.ConflictItem]) -> None:
    cases = conflict.edit_cases(items)
    pre = conflict.pre_scores(lm, items)
    plain = conflict.evaluate(lm, items, {case.case_id: DenseDelta({}) for case in cases}, pre).metrics
    with installed(lm.model, TakesEverything()):
        metrics = conflict.evaluate(lm, items, {case.case_id: MemoryDelta("TEST", [{}]) for case in cases}, pre).metrics
    routed = {name: value for name, value in metrics.items() if name.startswith("routed_")}
    assert routed == {f"routed_{name}": 100.0 for name in (
        "theta2_e1", "theta2_e2", "theta2_implied", "theta2_tied", "theta1_e1", "e2only_tied", "e2only_e1", "e2only_e2")}
    assert {name: value for name, value in metrics.items() if name not in routed} == plain
