"""The text the second-moment statistics are computed over (the `corpus` stage), as token ids.

ROME and MEMIT estimate C over 100,000 Wikipedia samples (`rome/layer_stats.py`). The default corpus here
is real Wikipedia text available offline: the WikiText-2 validation split (Good and Featured articles),
detokenised, cut into sequences of `length` tokens within articles, no start token at position 0 (GPT-J's
tokenizer adds none either). Two options: `wikipedia` streams Wikipedia itself (network), and
`self-sampled` draws text from the model with a fixed seed (the earlier offline stand-in: about eleven
tokens per key dimension of SmolLM2 at its default size, so C⁻¹ over-weights rare directions). The corpus
identity (name, source file hash, size) is part of the statistics' metadata and so of every delta key
that reads them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kepitfalls.data.checksum import hash_file
from kepitfalls.data.wikitext import VALIDATION, load_articles
from kepitfalls.models.loading import LoadedModel

WIKITEXT2 = "wikitext2"
SELF_SAMPLED = "self-sampled"
SELF_SAMPLED_VERSION = 1
WIKIPEDIA = "wikipedia"
WIKIPEDIA_DATASET = ("wikimedia/wikipedia", "20231101.en")  # ROME used the 20200501.en dump, no longer hosted
CORPORA = (WIKITEXT2, SELF_SAMPLED, WIKIPEDIA)


def rows_for(tokens: int, length: int) -> int:
    """Sequences of `length` tokens needed to reach `tokens` tokens (the last row may overshoot)."""
    return -(-tokens // length)


def wikitext_corpus(tokenizer, raw_dir: Path, tokens: int, length: int, seed: int) -> tuple[torch.Tensor, str]:
    """(rows × length token ids, version) from the WikiText-2 validation split.

    Each article is tokenised without special tokens and cut into whole `length`-token chunks (its tail
    shorter than `length` is dropped); a seeded permutation of all chunks gives the first rows needed.
    """
    path = Path(raw_dir) / VALIDATION
    chunks: list[list[int]] = []
    for article in load_articles(path):
        ids = tokenizer(article, add_special_tokens=False)["input_ids"]
        chunks.extend(ids[start : start + length] for start in range(0, len(ids) - length + 1, length))
    needed = rows_for(tokens, length)
    if needed > len(chunks):
        raise ValueError(
            f"stats.corpus.tokens: {tokens} tokens in sequences of {length} need {needed} sequences; "
            f"{path} has {len(chunks)} ({len(chunks) * length} tokens)"
        )
    order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed))[:needed]
    return torch.tensor([chunks[i] for i in order.tolist()], dtype=torch.long), f"{WIKITEXT2}/{VALIDATION}@sha256:{hash_file(path).sha256}"


@torch.no_grad()
def sample_corpus(lm: LoadedModel, samples: int, length: int, seed: int, batch_size: int, start_text: str) -> torch.Tensor:
    """`samples` sequences of `length` tokens sampled from the model (temperature 1, no truncation)."""
    tokenizer = lm.tokenizer
    start = tokenizer(start_text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(lm.model.device)
    torch.manual_seed(seed)
    rows = []
    for begin in range(0, samples, batch_size):
        count = min(batch_size, samples - begin)
        new = length - start.shape[1]
        output = lm.model.generate(
            input_ids=start.repeat(count, 1), attention_mask=torch.ones_like(start).repeat(count, 1),
            do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
            pad_token_id=tokenizer.pad_token_id,
        )
        rows.append(output.cpu())
    return torch.cat(rows)


def wikipedia_corpus(tokenizer, samples: int, length: int, seed: int) -> torch.Tensor:
    """`samples` Wikipedia articles cut to their first `length` tokens (shorter ones skipped), streamed with
    `datasets` in a seeded shuffle. Needs a network and `pip install 'kepitfalls[wikipedia]'`."""
    try:
        from datasets import load_dataset
    except ImportError as error:
        raise ImportError("the wikipedia corpus needs `pip install 'kepitfalls[wikipedia]'` and a network") from error
    stream = load_dataset(*WIKIPEDIA_DATASET, split="train", streaming=True).shuffle(seed=seed, buffer_size=10_000)
    rows: list[list[int]] = []
    for article in stream:
        ids = tokenizer(article["text"], add_special_tokens=False)["input_ids"][:length]
        if len(ids) == length:
            rows.append(ids)
        if len(rows) == samples:
            break
    return torch.tensor(rows, dtype=torch.long)
