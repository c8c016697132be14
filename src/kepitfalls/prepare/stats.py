"""Uncentred second moments C = E[k kᵀ] of the MLP output-projection inputs (ROME's and MEMIT's C).

Computed by the `stats` stage over the corpus of `prepare/corpus.py`, stored one layer per file with their
token count and C's smallest eigenvalue and condition number, and read back (or inverted) by ROME and MEMIT.
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Callable, Sequence

import torch

from kepitfalls.hidden.hooks import capture_many
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tensorfile import load_tensors, save_tensors
from kepitfalls.tokens import Batch


#: ({module: Σ k kᵀ}, tokens) over some corpus rows.
RunSums = tuple[dict[str, torch.Tensor], int]
#: ({module: C = Σ k kᵀ / n}, n) over the whole corpus.
Moments = tuple[dict[str, torch.Tensor], int]
#: Maps a function of (model, span) over spans, results in order: in this process by default, or fanned out
#: (`workers.map_cases`, as the stats stage does).
MapRuns = Callable[[Callable[[LoadedModel, tuple[int, int]], RunSums], list[tuple[int, int]]], list[RunSums]]


def second_moments(
    lm: LoadedModel, module_names: Sequence[str], corpus: torch.Tensor, batch_size: int, shards: int = 1,
    map_runs: MapRuns | None = None,
) -> Moments:
    """({module: Σ k kᵀ / n}, n) over every token of the corpus.

    Every module's inputs come from one forward pass per batch, stopped after the deepest of them; the
    products are accumulated in float64 (a float32 product moved a half-precision MEMIT edit by 10% on a
    tiny model: C⁻¹ amplifies its rounding). The batches are cut into `shards` consecutive runs, each summed
    in order, and the runs' sums are added in order: the bytes depend on `shards` (a parameter), not on
    where `map_runs` computes the runs.
    """
    starts = list(range(0, corpus.shape[0], batch_size))
    if not starts:
        raise ValueError("the statistics corpus is empty")
    cuts = [len(starts) * i // shards for i in range(shards + 1)]
    spans = [(starts[a], min(starts[b - 1] + batch_size, corpus.shape[0])) for a, b in zip(cuts, cuts[1:]) if b > a]
    run = functools.partial(_run_sums, tuple(module_names), corpus, batch_size)
    runs = map_runs(run, spans) if map_runs is not None else [run(lm, span) for span in spans]
    count = sum(n for _, n in runs)
    return {name: functools.reduce(operator.add, [totals[name] for totals, _ in runs]) / count for name in module_names}, count


@torch.no_grad()
def _run_sums(
    module_names: tuple[str, ...], corpus: torch.Tensor, batch_size: int, lm: LoadedModel, span: tuple[int, int]
) -> RunSums:
    """({module: Σ k kᵀ}, tokens) over the corpus rows `span`, one batch of `batch_size` rows at a time."""
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for begin in range(span[0], span[1], batch_size):
        ids = corpus[begin : begin + batch_size].to(lm.model.device)
        captured = capture_many(lm, module_names, Batch(ids, torch.ones_like(ids)))
        for name, (keys, _) in captured.items():
            flat = keys.reshape(-1, keys.shape[-1]).double()
            product = flat.T @ flat
            totals[name] = product if name not in totals else totals[name] + product
        count += ids.numel()
    return totals, count


def check_determined(count: int, widths: dict[str, int]) -> None:
    """Refuse a corpus with fewer tokens than a key is wide: C then has rank < width, so C⁻¹ is rounding noise
    (a 768-token corpus for SmolLM2's 1,536-wide keys let ROME's edits succeed on one machine and fail on
    another). Only the hard limit: a corpus just above it still gives an ill-conditioned C, whose condition
    number the stage prints and stores; the default has 85 tokens per dimension."""
    narrow = {name: width for name, width in widths.items() if width > count}
    if narrow:
        name, width = max(narrow.items(), key=operator.itemgetter(1))
        raise ValueError(
            f"stats.corpus.tokens: the corpus has {count:,} tokens, fewer than the {width:,}-wide inputs of {name}, "
            f"so C = E[k kᵀ] is singular and C⁻¹ undefined; use many times {width:,} tokens (ROME and MEMIT "
            "used 100,000 Wikipedia samples)"
        )


def spectrum(mom2: torch.Tensor) -> dict[str, float]:
    """C's smallest and largest eigenvalue and condition number (float64): how well C⁻¹ is determined."""
    eigenvalues = torch.linalg.eigvalsh(mom2.double())
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    return {"min_eigenvalue": smallest, "max_eigenvalue": largest,
            "condition_number": largest / smallest if smallest > 0 else float("inf")}


def stats_file(stats_dir: Path, layer: int) -> Path:
    """Where the `stats` stage writes one layer's second moment."""
    return stats_dir / f"layer-{layer}.safetensors"


def save_stats(path: Path, mom2: torch.Tensor, count: int, key: dict[str, object]) -> None:
    """Write statistics with their key, token count and spectrum as metadata (byte-identical for identical
    inputs: `tensorfile`)."""
    save_tensors(path, {"mom2": mom2}, {**key, "tokens": count, **spectrum(mom2)})


def load_second_moment(path: Path, inverse: bool = False) -> torch.Tensor:
    """C as the stats stage stored it, or C⁻¹ (inverted in float64), for ROME and MEMIT alike.

    Cached per process and file version, so each layer is read and inverted once however many edits use it.
    A C from fewer tokens than it is wide (a file from before `check_determined`) is refused: it is singular,
    so ROME's C⁻¹ and MEMIT's solve against λC + KKᵀ would be rounding noise.
    """
    return _cached_second_moment(str(path), path.stat().st_mtime_ns, inverse)


@functools.lru_cache(maxsize=32)
def _cached_second_moment(path: str, _mtime_ns: int, inverse: bool) -> torch.Tensor:
    tensors, metadata = load_tensors(path)
    mom2 = tensors["mom2"]
    if int(metadata["tokens"]) < mom2.shape[0]:
        raise ValueError(f"{path}: C comes from {metadata['tokens']} tokens, fewer than its width {mom2.shape[0]}: "
                         "it is singular (re-run the stats stage with more stats.corpus.tokens)")
    return torch.linalg.inv(mom2.double()).float() if inverse else mom2
