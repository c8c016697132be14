"""The MQuAKE suite end to end on tiny-gptj and two real MQuAKE-hard instances (METRICS.md §2.2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import pytest
from mirror import MIRROR
import torch
from fixtures_models import build_tiny, single_thread, snapshot  # noqa: F401  (single_thread: autouse)

from kepitfalls.data.mquake import MquakeRecord, load_mquake, load_mquake_prompts
from kepitfalls.deltas.codecs import MemoryDelta
from kepitfalls.scoring.router import Router, installed
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.suites import mquake
from kepitfalls.suites.common import PreScores, applied, chain, load_records, save_records

RAW_ROOT = MIRROR
CONFIG = mquake.Config(benchmark="mquake", file="derived/MQuAKE-hard.json", subset_size=2, seed=0, known_only=False,
                       max_new_tokens=4, cot_max_new_tokens=8)
FT_HPARAMS = FTHparams(layers=[1], num_steps=2, lr=1e-3, weight_decay=0.0, objective="target_new", norm_constraint=None)
KEYS = {"EW", "EW_contains", "IW", "IW_contains", "MH", "MH_prefix", "MH_contains", "MH_cot", "MH_cot_contains",
        "MH_pre", "MH_pre_contains", "cases", "edits"}

pytestmark = pytest.mark.skipif(not (RAW_ROOT / "mquake").is_dir(), reason="no benchmark mirror")


def test_select_bundles_records_with_their_prompts(tmp_path: Path) -> None:
    records = mquake.select(build_tiny("tiny-gptj"), RAW_ROOT, CONFIG)
    assert len(records) == 2
    for case in records:
        # MQuAKE-hard: 4 edits, every one of them a fact of the 4-hop new chain, in order.
        assert case.hop_edit == (0, 1, 2, 3)
        assert case.hop_demos == ("", "", "", "")
        assert case.multihop_demos.startswith("Q: What is the country where The Rotunda is located?")
        assert case.cot_demos.startswith("Question: What is the capital")
    path = tmp_path / "records.json"
    save_records(path, "mquake", records, CONFIG.model_dump())
    assert load_records(path, mquake.RECORD_TYPE) == records


def test_unedited_hops_get_their_relation_demos() -> None:
    record = next(r for r in load_mquake(RAW_ROOT / "mquake") if r.new_triples[3][1] == "P37")
    prompts = load_mquake_prompts(RAW_ROOT / "mquake")
    # Keep only the first two edits: the last two facts of the chain become "unedited" hops.
    partial = dataclasses.replace(record, requested_rewrite=record.requested_rewrite[:2], edit_triples=record.edit_triples[:2])
    case = mquake.build_case(partial, prompts, 4, 8)
    assert case.hop_edit == (0, 1, None, None)
    assert case.hop_demos[:2] == ("", "")
    assert case.hop_demos[3] == prompts.rel_prompts["P37"]
    assert case.hop_demos[3].startswith("Q: What is the official language of")
    missing = dataclasses.replace(partial, new_triples=(*partial.new_triples[:3], (partial.new_triples[3][0], "P17", "Q1")))
    assert mquake.build_case(missing, prompts, 4, 8).hop_demos[3] == prompts.multihop  # P17 has no rel-prompts
    swapped = dataclasses.replace(record, edit_triples=(record.edit_triples[1], record.edit_triples[0], *record.edit_triples[2:]))
    with pytest.raises(ValueError, match="is not requested_rewrite"):
        mquake.build_case(swapped, prompts, 4, 8)


def test_few_shot_prompt_joins_and_fits_the_context() -> None:
    lm = build_tiny("tiny-gptj")  # 256 positions: the 16 demonstrations do not fit
    demos = "Q: a? A: b\nQ: c? A: d\n"
    assert mquake.few_shot(lm, demos, "\n", "Q: e? A:", 4) == ("Q: a? A: b\nQ: c? A: d\nQ: e? A:", 0)
    assert mquake.few_shot(lm, "Question: a\nAnswer: b\n\nQuestion: c\nAnswer: d", "\n\n", "Question: e\nThoughts:", 4)[0] == (
        "Question: a\nAnswer: b\n\nQuestion: c\nAnswer: d\n\nQuestion: e\nThoughts:"
    )
    prompts = load_mquake_prompts(RAW_ROOT / "mquake")
    prompt, dropped = mquake.few_shot(lm, prompts.multihop, "\n", "Q: Who is the spouse of Joe Biden? A:", 4)
    assert 0 < dropped < 16
    assert len(lm.tokenizer(prompt)["input_ids"]) + 4 <= 256
    assert prompt.endswith("Elizabeth II\nQ: Who is the spouse of Joe Biden? A:")


def test_suite_end_to_end_reverts_every_delta() -> None:
    torch.manual_seed(0)
    lm = build_tiny("tiny-gptj")
    records = mquake.select(lm, RAW_ROOT, CONFIG)
    cases = mquake.edit_cases(records)
    assert [c.case_id for c in cases] == [str(r.record.case_id) for r in records]
    assert len({c.case_id for c in cases}) == len(cases)
    for case, record in zip(cases, records):
        assert case.base is None
        assert len(case.requests) == len(record.record.requested_rewrite) == 4
        first = record.record.requested_rewrite[0]
        assert case.requests[0].prompt == first.prompt and "{}" in first.prompt
        assert (case.requests[0].subject, case.requests[0].target_new, case.requests[0].target_true) == (
            first.subject, first.target_new, first.target_true)

    before = snapshot(lm.model)
    pre = mquake.pre_scores(lm, records)
    assert set(pre.values) == {"demos_dropped", "generations"}
    assert all(len(pre.values["generations"][str(r.record.case_id)]) == len(r.record.questions) for r in records)
    assert pre.values["demos_dropped"] > 0  # the tiny model's 256 positions

    method = FineTune(FT_HPARAMS)
    by_id = {c.case_id: c for c in cases}
    deltas = {}
    for case in cases:  # as editing.edit_suite does
        with applied(lm, deltas, chain(by_id, case.case_id)[:-1]):
            deltas[case.case_id] = method.edit(lm, list(case.requests))
    metrics = mquake.evaluate(lm, records, deltas, pre).metrics
    assert set(metrics) == KEYS
    for key, value in metrics.items():
        if key not in ("cases", "edits"):
            assert 0.0 <= value <= 100.0, key
    assert metrics["cases"] == 2.0 and metrics["edits"] == 8.0
    after = snapshot(lm.model)
    assert all(torch.equal(before[name], after[name]) for name in before)


def _two_edit_case() -> tuple[LoadedModel, MquakeRecord, mquake.MquakeCase]:
    """A tiny GPT-J and an instance (fourth hop P37) cut to its first two edits, generating 3 tokens (5 for CoT)."""
    lm = build_tiny("tiny-gptj")
    record = next(r for r in load_mquake(RAW_ROOT / "mquake") if r.new_triples[3][1] == "P37")
    partial = dataclasses.replace(record, requested_rewrite=record.requested_rewrite[:2], edit_triples=record.edit_triples[:2])
    return lm, record, mquake.build_case(partial, load_mquake_prompts(RAW_ROOT / "mquake"), 3, 5)


def test_instance_scores_route_edited_hops_through_clozes() -> None:
    lm, record, case = _two_edit_case()
    scores, diagnostics = mquake._instance_scores(lm, case)
    assert diagnostics == {}  # nothing installed
    assert len(scores.edits) == 2 and len(scores.questions) == 3 and len(scores.cot) == 3
    assert [h.edited for h in scores.hops] == [True, True, False, False]
    assert [h.attempt.generation for h in scores.hops[:2]] == [e.generation for e in scores.edits]
    assert scores.edits[0].answers == (record.new_single_hops[0].answer, *record.new_single_hops[0].answer_alias)
    assert scores.hops[3].attempt.answers[0] == record.new_single_hops[3].answer
    assert scores.questions[0].answers == (record.new_answer, *record.new_answer_alias)


class ClozesOnly(Router):
    """Takes the bare clozes (no few-shot "Q:" or "Question:"), leaves the rest: prompts pass unchanged."""

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        return [prompt if "Q:" not in prompt and "Question:" not in prompt else None for prompt in prompts]


def test_a_memory_methods_routing_is_counted_per_prompt_set() -> None:
    lm, record, case = _two_edit_case()
    plain, _ = mquake._instance_scores(lm, case)
    with installed(lm.model, ClozesOnly()):
        scored = mquake.score(lm, case, {str(record.case_id): MemoryDelta("TEST", [{}])}, PreScores())
    assert scored[0] == plain  # routed unchanged: the same generations
    assert scored[1] == {"routed_cloze": [100.0, 100.0], "routed_hop": [0.0, 0.0], "routed_question": [0.0] * 3, "routed_cot": [0.0] * 3}
