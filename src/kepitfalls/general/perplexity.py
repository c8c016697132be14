"""Perplexity, the collapse indicator: Yang et al.'s per-sentence perplexity on ME-PPL after every edit, and
WikiText-2 test perplexity on a fixed seeded sample of windows at each checkpoint."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from kepitfalls.data.wikitext import load_articles
from kepitfalls.general.config import WikiSample
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import padded


@torch.inference_mode()
def mean_nlls(lm: LoadedModel, sequences: Sequence[list[int]], batch_size: int) -> list[float]:
    """Per sequence, in order: the mean negative log-likelihood (nats) of tokens 2..L given the ones before,
    right padded (as Yang et al.), `batch_size` sequences of similar length per forward pass."""
    if any(len(ids) < 2 for ids in sequences):
        raise ValueError("perplexity needs at least two tokens per sequence (one to predict)")
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))  # batches of like lengths pad little
    results: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [sequences[i] for i in rows]
        ids, mask = padded(batch, lm.tokenizer.pad_token_id)
        logits = lm.model(input_ids=ids.to(lm.model.device), attention_mask=mask.to(lm.model.device)).logits.float().cpu()
        nll = -F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        weights = mask[:, 1:].float()
        results.update(zip(rows, ((nll * weights).sum(1) / weights.sum(1)).tolist()))
    return [results[i] for i in range(len(sequences))]


def sentence_perplexities(lm: LoadedModel, texts: Sequence[str], batch_size: int) -> list[float]:
    """Yang et al.'s per-sentence perplexity exp(mean token NLL), no start token added (`add_start_token=False`)."""
    sequences = [lm.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    for text, ids in zip(texts, sequences):
        if len(ids) < 2:
            raise ValueError(f"sentence {text!r} has fewer than two tokens; it has no perplexity")
    return [float(torch.tensor(nll).exp()) for nll in mean_nlls(lm, sequences, batch_size)]


def wikitext_windows(lm: LoadedModel, test_file: Path, config: WikiSample) -> list[list[int]]:
    """`config.sequences` non-overlapping windows of `config.length` tokens of the detokenised test split,
    chosen by `config.seed` and kept in text order."""
    ids = lm.tokenizer("\n\n".join(load_articles(test_file)), add_special_tokens=False)["input_ids"]
    count = len(ids) // config.length
    if config.sequences > count:
        raise ValueError(f"general.wikitext.sequences {config.sequences} exceeds the {count} windows of {config.length} tokens in {test_file}")
    chosen = sorted(random.Random(config.seed).sample(range(count), config.sequences))
    return [ids[i * config.length : (i + 1) * config.length] for i in chosen]
