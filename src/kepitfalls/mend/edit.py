"""MEND's passes through the top of the model, shared by the edit and the training loop.

Only the blocks from the lowest edited one up change, so every sequence is run through the blocks below
once (no gradient) and each pass restarts from the residual entering that block (`layers.normed_hidden`;
a full pass where the architecture cannot restart). Two passes:
- `gradient_factors`: the edit's inner step. The loss is the mean NLL of the target tokens of every
  sequence edited together (one request, or a batch: the mean over all the batch's target tokens, the
  reference's `multiclass_log_probs`); for each edited linear layer its input rows x_t and the loss's
  gradient δ_t with respect to its output, the rows of every sequence stacked (the reference's forward and
  backward hooks, `hooks.py`, and its flattening of the batch's positions). First order, as the reference:
  x and δ are detached.
- `pending`: a forward with the update ΔW = U Vᵀ added as x V Uᵀ to each layer's output, differentiable in
  U and V (the reference's `higher` monkey-patch does the same through W + ΔW).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from kepitfalls.hidden.partial import normed_hidden, residual_entering
from kepitfalls.models.adapters import get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch, prompt_ids, target_ids

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Scored:
    """A token sequence and the (position, label) pairs its loss reads: the target tokens after a prompt."""

    ids: list[int]
    positions: list[int]
    labels: list[int]

    @classmethod
    def of(cls, tokenizer, prompt: str, target: str) -> "Scored":
        head, tail = prompt_ids(tokenizer, prompt), target_ids(tokenizer, target)
        return cls(head + tail, list(range(len(head) - 1, len(head) + len(tail) - 1)), tail)


class Top:
    """Sequences whose residual entering block `start` is computed once; `hidden` runs the blocks above."""

    def __init__(self, lm: LoadedModel, sequences: Sequence[list[int]], start: int) -> None:
        self.lm, self.start, self.depth = lm, start, num_layers(lm.model)
        self.batch = Batch.from_ids(sequences, lm.tokenizer.pad_token_id, lm.model.device)
        self.residual = residual_entering(lm, start, self.batch)

    def hidden(self, rows: list[int]) -> torch.Tensor:
        """Final-normed hidden states of the chosen rows, (rows, width, d)."""
        batch = Batch(self.batch.input_ids[rows], self.batch.attention_mask[rows])
        residual = None if self.residual is None else self.residual[rows]
        return normed_hidden(self.lm, residual, batch, self.start, self.depth)


def log_probs(lm: LoadedModel, hidden: torch.Tensor, positions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Float32 next-token log-probabilities at `positions[r]` of each row r of `hidden`, one (positions, vocab)
    tensor per row, from one pass through the LM head (its matrix is the largest the step reads)."""
    head = get_module(lm.model, lm.arch.lm_head)
    rows = torch.tensor([r for r, cols in enumerate(positions) for _ in cols], device=hidden.device)
    cols = torch.tensor([c for cols in positions for c in cols], device=hidden.device)
    scores = torch.log_softmax(head(hidden[rows, cols]).float(), dim=-1)
    return list(scores.split([len(cols) for cols in positions]))


def target_nll(rows: torch.Tensor, scored: Scored) -> torch.Tensor:
    """The mean NLL of the target tokens, from the log-probability rows at `scored.positions`."""
    return batch_nll([rows], [scored])


def batch_nll(rows: Sequence[torch.Tensor], scored: Sequence[Scored]) -> torch.Tensor:
    """The mean NLL over the target tokens of every sequence (each token weighs the same, as the reference's
    edit loss over a batch), from each sequence's log-probability rows at its `positions`."""
    picked = [r.gather(1, torch.tensor(s.labels, device=r.device)[:, None]) for r, s in zip(rows, scored, strict=True)]
    return -torch.cat(picked).mean()


def gradient_factors(lm: LoadedModel, top: Top, rows: Sequence[int], scored: Sequence[Scored], modules: Sequence[str]) -> Factors:
    """Per module, (x (T, in), δ (T, out)) of the mean target NLL of `top`'s rows `rows` (scored by `scored`,
    in order) on the current weights: every position of every row, row after row (T = rows × width; the
    positions after a row's last target token, padding included, have δ = 0 and are dropped by the editor)."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            probe = torch.zeros_like(output, requires_grad=True)  # its gradient is δ; the graph stays whole
            captured[name] = (args[0].detach(), probe)
            return output + probe

        return hook

    handles = [get_module(lm.model, name).register_forward_hook(hook_for(name)) for name in modules]
    try:
        with torch.enable_grad():
            loss = batch_nll(log_probs(lm, top.hidden(list(rows)), [s.positions for s in scored]), scored)
            grads = torch.autograd.grad(loss, [captured[name][1] for name in modules])
    finally:
        for handle in handles:
            handle.remove()
    return {name: (captured[name][0].flatten(0, 1), grad.flatten(0, 1)) for name, grad in zip(modules, grads)}


@contextmanager
def pending(model: nn.Module, updates: Factors) -> Iterator[None]:
    """While open, each module's output gains x V Uᵀ: the forward of W + U Vᵀ, without writing W."""

    def hook_for(u: torch.Tensor, v: torch.Tensor):
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return output + ((args[0].float() @ v) @ u.T).to(output.dtype)

        return hook

    handles = [get_module(model, name).register_forward_hook(hook_for(u, v)) for name, (u, v) in updates.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
