"""Fine-tuning one layer's MLP output projection (FT-L, FT-M and the constrained variant).

Follows ROME's `baselines/ft/ft_main.py` and EasyEdit's `models/ft/ft_main.py`: Adam on the weight and
bias of `arch.mlp_out` at the chosen layers, `num_steps` steps, a step taken only while the loss is at
least 0.01, and, when `norm_constraint` is set, every touched value clamped to within ±ε of its original
(the L∞ bound of Zhu et al. 2020). Objectives:
- `prompt_last` (FT-L): every target token's log-probability read at the prompt's last position, as the
  reference does (a bag-of-tokens loss for multi-token targets).
- `target_new` (FT-M): teacher-forced loss on the target tokens only.
Blocks below the lowest tuned layer are run once per edit, not once per step.

Mixed precision, whatever the weights' dtype: Adam (and the norm constraint) work on float32 master copies
of the tuned tensors; each step copies the masters into the model's weights (rounded to their dtype), runs
forward and backward there, and hands the weights' gradients to the masters upcast. Adam on float16
weights directly breaks (squared gradients underflow to zero and the steps blow up), and half-precision
weights round small updates away. The delta is master − original, in float32.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat

from kepitfalls.deltas.codecs import DenseDelta
from kepitfalls.hidden.partial import normed_hidden, residual_entering
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.adapters import get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER
from kepitfalls.tokens import Batch, prompt_ids, target_ids

STEP_THRESHOLD = 1e-2
OBJECTIVES = ("prompt_last", "target_new")


class FTHparams(Hparams):
    """FT's `methods.FT.<model>` block; `norm_constraint` null leaves the weights unconstrained."""

    layers: Annotated[list[NonNegativeInt], LAYER, Field(min_length=1)]
    num_steps: NonNegativeInt
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    objective: Literal[OBJECTIVES]
    norm_constraint: PositiveFloat | None


class FineTune(EditMethod):
    """FT on `arch.mlp_out` at `hparams.layers`; all requests of a batch are tuned together."""

    name = "FT"
    batch_capable = True
    hparams_type = FTHparams

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> DenseDelta:
        objective = self.hparams.objective
        if objective not in OBJECTIVES:
            raise ValueError(f"FT objective must be one of {OBJECTIVES}, got {objective!r}")
        layers = sorted(self.hparams.layers)
        names = [n for layer in layers for n in (f"{lm.arch.mlp_out.format(layer)}.weight", f"{lm.arch.mlp_out.format(layer)}.bias")]
        params = {n: p for n, p in lm.model.named_parameters() if n in names}
        originals = {n: p.detach().clone() for n, p in params.items()}
        masters = {n: p.detach().float().clone() for n, p in params.items()}
        batch, positions, labels, scales = _training_batch(lm, requests, objective)
        residual = residual_entering(lm, layers[0], batch)
        depth = num_layers(lm.model)
        lm_head = get_module(lm.model, lm.arch.lm_head)
        optimiser = torch.optim.Adam(list(masters.values()), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        eps = self.hparams.norm_constraint
        for p in params.values():
            p.requires_grad_(True)
        try:
            for _ in range(self.hparams.num_steps):
                optimiser.zero_grad()
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(masters[n])
                hidden = normed_hidden(lm, residual, batch, layers[0], depth)
                log_probs = torch.log_softmax(lm_head(hidden[positions[0], positions[1]]).float(), dim=-1)
                picked = log_probs.gather(1, labels[:, None]).squeeze(1)
                per_request = torch.zeros(len(requests), device=picked.device).index_add(0, positions[0], picked * scales)
                loss = -per_request.mean()
                if loss.item() >= STEP_THRESHOLD:
                    loss.backward()
                    for n, p in params.items():
                        masters[n].grad, p.grad = p.grad.float(), None
                    optimiser.step()
                if eps is not None:
                    with torch.no_grad():
                        for n, master in masters.items():
                            start = originals[n].float()
                            master.copy_(torch.clamp(master, start - eps, start + eps))
            changes = {n: master - originals[n].float() for n, master in masters.items()}
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(originals[n])
                    p.grad = None
                    p.requires_grad_(False)
        return DenseDelta(changes)


def _training_batch(lm: LoadedModel, requests: list[EditRequest], objective: str):
    """Token ids plus, for every loss term, its (row, column), label and weight 1/len(target)."""
    tok, device = lm.tokenizer, lm.model.device
    rows, cols, labels, scales, sequences = [], [], [], [], []
    for row, request in enumerate(requests):
        prefix = prompt_ids(tok, request.rewrite_prompt)
        target = target_ids(tok, request.target_new)
        if objective == "prompt_last":
            sequences.append(prefix)
            cols.extend([len(prefix) - 1] * len(target))
        else:
            sequences.append(prefix + target)
            cols.extend(range(len(prefix) - 1, len(prefix) - 1 + len(target)))
        rows.extend([row] * len(target))
        labels.extend(target)
        scales.extend([1.0 / len(target)] * len(target))
    batch = Batch.from_ids(sequences, tok.pad_token_id, device)

    def as_long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, device=device, dtype=torch.long)

    return batch, (as_long(rows), as_long(cols)), as_long(labels), torch.tensor(scales, device=device)
