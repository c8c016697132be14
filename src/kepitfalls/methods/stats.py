"""Uncentred second moments C = E[k kᵀ] of the MLP output-projection inputs (ROME's and MEMIT's C).

ROME computes them over 100,000 Wikipedia samples. Offline, kepitfalls samples its corpus from the model
itself with a fixed seed (corpus name "self-sampled"): no network, and the keys k are drawn from the
distribution of text the model itself produces. The corpus name, version, sample count and dtype are part
of the statistics' key.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from kepitfalls.atomic import atomic_path
from kepitfalls.methods.layers import Batch, capture_many
from kepitfalls.models.loading import LoadedModel

SELF_SAMPLED = "self-sampled"
SELF_SAMPLED_VERSION = 1
WIKIPEDIA = "wikipedia"
WIKIPEDIA_DATASET = ("wikimedia/wikipedia", "20231101.en")  # ROME used the 20200501.en dump, no longer hosted


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


@torch.no_grad()
def second_moments(lm: LoadedModel, module_names: Sequence[str], corpus: torch.Tensor, batch_size: int) -> tuple[dict[str, torch.Tensor], int]:
    """({module: Σ k kᵀ / n}, n) over every token of the corpus, accumulated in float64.

    Every module's inputs come from one forward pass per batch, stopped after the deepest of them.
    """
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for begin in range(0, corpus.shape[0], batch_size):
        ids = corpus[begin : begin + batch_size].to(lm.model.device)
        captured = capture_many(lm, module_names, Batch(ids, torch.ones_like(ids)))
        for name, (keys, _) in captured.items():
            flat = keys.reshape(-1, keys.shape[-1]).double()
            totals[name] = flat.T @ flat if name not in totals else totals[name] + flat.T @ flat
        count += ids.numel()
    if not count:
        raise ValueError("the statistics corpus is empty")
    return {name: totals[name] / count for name in module_names}, count


def stats_file(stats_dir: Path, layer: int) -> Path:
    """Where the `stats` stage writes one layer's second moment."""
    return stats_dir / f"layer-{layer}.safetensors"


def save_stats(path: Path, mom2: torch.Tensor, count: int, key: dict[str, str]) -> None:
    """Write statistics with their key as metadata."""
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"mom2": mom2.contiguous()}, str(tmp), metadata={**key, "count": str(count)})


def load_second_moment(path: Path, inverse: bool = False) -> torch.Tensor:
    """C as the stats stage stored it, or C⁻¹ (inverted in float64), for ROME and MEMIT alike.

    Cached per process and file version, so each layer is read and inverted once however many edits use it.
    """
    return _cached_second_moment(str(path), path.stat().st_mtime_ns, inverse)


@functools.lru_cache(maxsize=32)
def _cached_second_moment(path: str, _mtime_ns: int, inverse: bool) -> torch.Tensor:
    mom2 = load_file(path)["mom2"]
    return torch.linalg.inv(mom2.double()).float() if inverse else mom2
