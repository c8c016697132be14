"""Perplexity and generation of the Figure-4 runs against direct computations on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fixtures_models import single_thread, tiny_gptj_lm, tiny_lm  # noqa: F401
from kepitfalls.general.config import WikiSample
from kepitfalls.general.generation import greedy
from kepitfalls.general.perplexity import mean_nlls, sentence_perplexities, wikitext_windows
from kepitfalls.models.loading import LoadedModel

SENTENCES = [" The cat sat on the mat.", " A much longer sentence about nothing in particular, padded by the others.", " Hi there"]


def direct_perplexity(lm: LoadedModel, text: str) -> float:
    """exp(mean NLL of tokens 2..L), one unpadded sequence."""
    ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, :-1].float()
    return math.exp(F.cross_entropy(logits, ids[0, 1:]).item())


def test_sentence_perplexity_matches_a_direct_computation_whatever_the_batching(tiny_lm: LoadedModel) -> None:
    expected = [direct_perplexity(tiny_lm, text) for text in SENTENCES]
    for batch_size in (1, 2, 3):
        assert sentence_perplexities(tiny_lm, SENTENCES, batch_size) == pytest.approx(expected, rel=1e-4)


def test_a_one_token_sentence_has_no_perplexity(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="fewer than two tokens"):
        sentence_perplexities(tiny_gptj_lm, ["x"], 2)


def test_wikitext_windows_are_seeded_and_of_the_given_length(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    text = "\n".join(f" = Article {i} = \n Some text of article {i} , with words ." for i in range(30))
    test_file = tmp_path / "test.txt"
    test_file.write_text(text, encoding="utf-8")
    windows = wikitext_windows(tiny_gptj_lm, test_file, WikiSample(sequences=3, length=16, seed=0))
    assert len(windows) == 3 and all(len(w) == 16 for w in windows)
    assert windows == wikitext_windows(tiny_gptj_lm, test_file, WikiSample(sequences=3, length=16, seed=0))
    assert windows != wikitext_windows(tiny_gptj_lm, test_file, WikiSample(sequences=3, length=16, seed=1))
    direct = []
    for window in windows:
        ids = torch.tensor([window])
        with torch.no_grad():
            direct.append(F.cross_entropy(tiny_gptj_lm.model(input_ids=ids).logits[0, :-1], ids[0, 1:]).item())
    assert mean_nlls(tiny_gptj_lm, windows, 2) == pytest.approx(direct, rel=1e-4)
    with pytest.raises(ValueError, match="general.wikitext.sequences"):
        wikitext_windows(tiny_gptj_lm, test_file, WikiSample(sequences=10_000, length=16, seed=0))


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(tiny_lm: LoadedModel) -> None:
    prompts = ["The capital of France is", "Hello", "A somewhat longer prompt than the others, to pad"]
    batched = greedy(tiny_lm, prompts, 6, batch_size=3)
    alone = [greedy(tiny_lm, [p], 6, batch_size=1)[0] for p in prompts]
    assert [g.new for g in batched] == [g.new for g in alone]
    for prompt, generation in zip(prompts, batched):  # `full`: the prompt (no left padding) and the continuation
        assert generation.full.startswith(tiny_lm.tokenizer.decode(tiny_lm.tokenizer(prompt)["input_ids"], skip_special_tokens=False))
        assert generation.full.replace(tiny_lm.tokenizer.eos_token, "").endswith(generation.new)
