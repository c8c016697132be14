"""IKE: the demonstration order and context for a fixed store, the router on a model, and an edit on SmolLM2."""

from __future__ import annotations

import random

import pytest
import torch

from fixtures_models import single_thread, tiny_lm  # noqa: F401
from kepitfalls.data.zsre import ZsreRecord
from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE, MemoryDelta
from kepitfalls.methods.IKE import IKE, IKEHparams, IKERouter, build_store, context, kind_sequence, select_demonstrations
from kepitfalls.methods.base import Artifacts
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring import primitives as P
from kepitfalls.scoring.router import ROUTER_ATTRIBUTE, installed, routing_metrics


def _record(i: int, src: str, alt: str) -> ZsreRecord:
    return ZsreRecord(i, "s", src, "p", f"Rephrased {src}", alt, ("old",), f"nq question: q{i}", f"a{i}")


STORE = build_store([_record(i, f"Q{i}?", f"A{i}") for i in range(8)] + [_record(8, "Q8?", " ")])
# Record i's three demonstrations lie at angle i·0.1 (copy), i·0.1 + 0.05 (update) and i·0.1 + 0.3 (retain)
# from the query, so record 0 is nearest, then 1, 2, ...
ANGLES = torch.tensor([[i * 0.1, i * 0.1 + 0.05, i * 0.1 + 0.3] for i in range(8)]).reshape(-1)
EMBEDDINGS = torch.stack([ANGLES.cos(), ANGLES.sin()], dim=1)
QUERY = torch.tensor([1.0, 0.0])

#: The context the reference ordering gives for k = 8 over the fixed store with the seed "0\0<fact>" (stored
#: once): kinds drawn 1 : 3 : 4, the nearest record last, then the fact's copy line and its query line.
STORED_CONTEXT = (
    "New Fact: Q7? A7\nPrompt: Q7? A7\n\n"
    "New Fact: Q6? A6\nPrompt: Rephrased Q6? A6\n\n"
    "New Fact: Q5? A5\nPrompt: nq question: q5 a5\n\n"
    "New Fact: Q4? A4\nPrompt: nq question: q4 a4\n\n"
    "New Fact: Q3? A3\nPrompt: nq question: q3 a3\n\n"
    "New Fact: Q2? A2\nPrompt: nq question: q2 a2\n\n"
    "New Fact: Q1? A1\nPrompt: Rephrased Q1? A1\n\n"
    "New Fact: Q0? A0\nPrompt: Rephrased Q0? A0\n\n"
    "New Fact: Where is the Eiffel Tower? Rome\nPrompt: Where is the Eiffel Tower? Rome\n\n"
    "New Fact: Where is the Eiffel Tower? Rome\nPrompt: "
)


def test_the_store_skips_records_without_a_new_target() -> None:
    assert len(STORE) == 8
    assert STORE[3] == {
        "copy": "New Fact: Q3? A3\nPrompt: Q3? A3\n\n",
        "update": "New Fact: Q3? A3\nPrompt: Rephrased Q3? A3\n\n",
        "retain": "New Fact: Q3? A3\nPrompt: nq question: q3 a3\n\n",
    }


def test_reference_prompt_for_a_fixed_store_matches_the_stored_string() -> None:
    fact = "Where is the Eiffel Tower? Rome"
    demos, ids = select_demonstrations(STORE, EMBEDDINGS, QUERY, 8, "reference", random.Random(f"0\0{fact}"))
    assert [i // 3 for i in ids] == [7, 6, 5, 4, 3, 2, 1, 0]  # most similar last
    assert sorted(i % 3 for i in ids) == [0, 1, 1, 1, 2, 2, 2, 2]  # copy : update : retain = 1 : 3 : 4
    assert context([{"fact": fact, "demos": demos}]) == STORED_CONTEXT


def test_easyedit_ordering_takes_the_nearest_sentences_most_similar_first() -> None:
    demos, ids = select_demonstrations(STORE, EMBEDDINGS, QUERY, 4, "easyedit", random.Random(0))
    assert ids == [0, 1, 3, 4]  # angles 0, 0.05, 0.1, 0.15; record 0's retain (0.3) is farther
    assert demos[0] == STORE[0]["copy"] and demos[1] == STORE[0]["update"]


def test_reference_ordering_needs_k_a_multiple_of_eight() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        kind_sequence(12, random.Random(0))


def test_several_facts_appear_oldest_first_with_the_latest_demonstrations() -> None:
    entries = [{"fact": "F1", "demos": ["D1\n\n"]}, {"fact": "F2", "demos": ["D2\n\n"]}]
    assert context(entries) == (
        "D2\n\nNew Fact: F1\nPrompt: F1\n\nNew Fact: F2\nPrompt: F2\n\nNew Fact: F1\nNew Fact: F2\nPrompt: "
    )


def test_revert_leaves_no_router_and_unchanged_scores(tiny_lm: LoadedModel) -> None:
    prompts, targets = ["The Eiffel Tower is in", "Paris is in"], ["Rome", "France"]
    before = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
    delta = MemoryDelta("IKE", [{"fact": "The Eiffel Tower is in Rome", "demos": [STORE[0]["update"]]}])
    with installed(tiny_lm.model, IKERouter()) as router:
        delta.apply(tiny_lm.model)
        try:
            routed = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
        finally:
            delta.revert(tiny_lm.model)
        direct = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, [context(delta.entries) + p for p in prompts], targets)
    assert routed == direct and routed != before
    assert routing_metrics(router) == {"routing_teacher_forced_routed": 2.0, "routing_teacher_forced_seen": 2.0}
    assert not getattr(tiny_lm.model, MEMORY_ATTRIBUTE) and not hasattr(tiny_lm.model, ROUTER_ATTRIBUTE)
    assert P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, prompts, targets) == before


def test_a_context_longer_than_the_model_allows_is_refused_at_edit_time(tiny_lm: LoadedModel) -> None:
    limit = tiny_lm.model.config.max_position_embeddings  # GPT-J's config maps it to n_positions
    hparams = IKEHparams(k=8, ordering="reference", encoder="all-minilm-l6-v2", train_file="x.json", reserve_tokens=limit - 10, seed=0)
    method = IKE(hparams, Artifacts())
    entry = {"fact": "The Eiffel Tower is in Rome", "demos": [STORE[0]["copy"]] * 8}
    with pytest.raises(ValueError, match="reserve_tokens"):
        method._check_length(tiny_lm, entry)
    IKE(hparams.model_copy(update={"reserve_tokens": 1}), Artifacts())._check_length(tiny_lm, {"fact": "F", "demos": ["D"]})
