"""Length batching of scored prompts: optimal cuts, every prompt once, results back in the prompts' order."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from fixtures_models import single_thread, tiny_llama_lm  # noqa: F401
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring import batching
from kepitfalls.scoring import primitives as P


def _cost(prefixes: list[list[int]], answers: list[list[list[int]]], batches: list[list[int]]) -> int:
    """Padded tokens plus the passes' fixed cost, written out plainly."""
    total = 0
    for batch in batches:
        tails = [len(a) - 1 for i in batch for a in answers[i] if len(a) > 1]
        total += max(len(prefixes[i]) for i in batch) * len(batch) + batching.PASS_COST_TOKENS
        if tails:
            total += max(tails) * len(tails) + batching.PASS_COST_TOKENS
    return total


def _sorted_cuts(order: list[int], batch_size: int):
    """Every way to cut `order` into contiguous batches of at most `batch_size`."""
    for mask in itertools.product([False, True], repeat=len(order) - 1):
        batches, current = [], [order[0]]
        for cut, i in zip(mask, order[1:]):
            if cut:
                batches.append(current)
                current = []
            current.append(i)
        batches.append(current)
        if max(len(b) for b in batches) <= batch_size:
            yield batches


@pytest.mark.parametrize("seed", range(6))
def test_length_batches_are_the_cheapest_cuts_of_the_sorted_prompts(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    prefixes = [[0] * rng.choice([2, 3, 5, 30, 31, 60]) for _ in range(n)]
    answers = [[[0] * rng.choice([1, 1, 2, 8]) for _ in range(rng.randint(0, 2))] for _ in range(n)]
    batch_size = rng.randint(1, n)
    batches = batching.length_batches(prefixes, answers, batch_size)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert max(len(b) for b in batches) <= batch_size
    order = [i for b in batches for i in b]
    assert [len(prefixes[i]) for i in order] == sorted(len(p) for p in prefixes)
    assert _cost(prefixes, answers, batches) == min(_cost(prefixes, answers, cuts) for cuts in _sorted_cuts(order, batch_size))


def test_prompts_of_one_length_share_a_batch_and_far_apart_lengths_do_not() -> None:
    answers = [[[0]]] * 20
    assert batching.length_batches([[0] * 7] * 20, answers, 32) == [list(range(20))]
    prefixes = [[0] * (3 if i % 2 else 90) for i in range(20)]
    assert batching.length_batches(prefixes, answers, 32) == [list(range(1, 20, 2)), list(range(0, 20, 2))]
    with pytest.raises(ValueError, match="batch_size"):
        batching.length_batches(prefixes, answers, 0)


def test_scores_come_back_in_the_prompts_order_from_several_batches(tiny_llama_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """With passes free, every prompt length gets its own batch; each result is still its own prompt's."""
    lm = tiny_llama_lm
    prompts = ["The capital of France is", "Paris", "A very long prompt about the capital city of a country in Europe is", "Rome is in"]
    targets = [("Paris", "the city of light"), ("is",), ("Berlin",), ("Italy", "Lazio")]
    together = P.score_prompts(lm.model, lm.tokenizer, prompts, targets)
    monkeypatch.setattr(batching, "PASS_COST_TOKENS", 0)
    assert len(batching.length_batches([P.prompt_ids(lm.tokenizer, p) for p in prompts], [[[0]]] * 4, 32)) == 4
    apart = P.score_prompts(lm.model, lm.tokenizer, prompts, targets)
    for prompt, prompt_targets, a, b in zip(prompts, targets, together, apart):
        alone = P.score_prompts(lm.model, lm.tokenizer, [prompt], [prompt_targets])[0]
        for result in (a, b):
            assert [f.target_ids for f in result.forced] == [f.target_ids for f in alone.forced]
            for f, g in zip(result.forced, alone.forced):
                assert f.token_logprobs == pytest.approx(g.token_logprobs, abs=2e-5)
            torch.testing.assert_close(result.next_token, alone.next_token, atol=2e-5, rtol=0)
