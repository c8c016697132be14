"""GRACE (Hartvigsen et al. 2023): a codebook of (key, value, ε) entries on one layer; no weight changes.

Follows the reference Thartvigsen/GRACE (`grace/editors/grace.py`, GRACEAdapter), with EasyEdit's GPT-J
settings (`hparams/GRACE/gpt-j-6b.yaml`: `transformer.h.25.mlp.fc_out`, n_iter 200, edit_lr 1.0, ε 1.0,
cold values, replace_last, coverage). One edit:
- the query is the wrapped module's input at the prompt's last token;
- codebook update as the reference's first iteration: no key within ε_init + ε_nearest → a new entry with
  ε_init; a key that close with another label → a new entry, and both radii split to d/2 (the older one
  to d/2 − 1e-5); the same label → no new entry, the nearest radius grows to d (`coverage`) and its value
  is trained further;
- the value (cold: uniform [0, 1) from `seed`; warm: the module's output there) is trained for `n_iter`
  Adam steps at `edit_lr` on the mean NLL of the target tokens after the prompt, the codebook applied as
  at inference from the prompt's last token on. Each step re-runs only those tokens, through the blocks
  from the wrapped layer up (`SuffixStack`: the earlier tokens' residual and attention cached).
The delta is the codebook change (`deltas/codebook.py`), so chains of edits compose and revert exactly.

Differences from the reference and from EasyEdit, on purpose (why numbers may differ from EasyEdit's):
- Labels match when the target token ids are equal. The reference (and EasyEdit) compare the *mean* label
  id, -100 prompt positions included, so different targets can count as "the same".
- EasyEdit's `add_key` prepends the new label while keys are appended, so from the third key on labels
  and keys are misaligned and the label check compares the wrong entries; here label i belongs to key i,
  as in the reference.
- EasyEdit nests edit ids (`[self.edit_ids] + [new]`); here an entry is identified by its position, and
  each delta records the positions it changed.
- EasyEdit's query position sticks to the last edited prompt's length (`min(key_id, len − 1)`), so a
  teacher-forced rephrase of another length is queried at the wrong token. Here every position queries
  the codebook for itself: the prompt's last token decides the first target token, as in generation.
- `replace_last` is applied per position at inference (also to target tokens that happen to fall within
  a radius), which is what token-by-token generation does in the reference; value training sees the same rule.
  So a prompt that *contains* an edited prompt fires at that inner token: CounterFact+'s distracting
  prompts (rewrite prompt, new target, then a neighbour) move (NKL+ > 0) while plain neighbours stay exact.
- A conflict on the very same prompt (distance 0) splits the radii to 0 and −1e-5 as the reference does;
  the older key then wins the tie and the new value never fires, so its training stops at once.
- ε is an absolute distance between activations: 1.0 is GPT-J's (16,384-wide fc_out inputs) and means
  something else on another model; `codebook_distance_*` in the metrics shows where prompts fall.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from kepitfalls.deltas.codebook import Codebook, CodebookDelta, Entry
from kepitfalls.hidden.partial import normed_hidden
from kepitfalls.hidden.suffix import SuffixStack
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.adapters import get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER, Seed
from kepitfalls.tokens import Batch, prompt_ids, target_ids

#: The reference's margin that keeps a split older radius just short of the new key (`grace.py`).
SPLIT_MARGIN = 1e-5


class GRACEHparams(Hparams):
    """GRACE's `methods.GRACE.<model>` block (the reference's editor config, EasyEdit's values for GPT-J)."""

    layer: Annotated[NonNegativeInt, LAYER]
    site: Literal["mlp_out", "mlp_in"]  # the wrapped module: the MLP's output (fc_out/down_proj) or input projection
    n_iter: PositiveInt
    edit_lr: PositiveFloat
    eps: PositiveFloat
    val_init: Literal["cold", "warm"]
    replacement: Literal["replace_last"]
    eps_expand: Literal["coverage"]
    seed: Seed


def describe(hparams: GRACEHparams) -> str:
    """One sentence for table footnotes."""
    return (
        f"GRACE codebook on the {hparams.site} module of layer {hparams.layer}: ε {hparams.eps}, "
        f"{hparams.val_init} values trained {hparams.n_iter} steps at lr {hparams.edit_lr}, {hparams.replacement}"
    )


class GRACE(EditMethod):
    """Codebook edits; a sequence of requests grows one codebook, as the reference's sequential editing."""

    name = "GRACE"
    hparams_type = GRACEHparams

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> CodebookDelta:
        if len(requests) != 1:
            raise ValueError(f"GRACE edits one request at a time, got {len(requests)}")
        (request,) = requests
        h = self.hparams
        module = getattr(lm.arch, h.site).format(h.layer)
        prefix, target = prompt_ids(lm.tokenizer, request.rewrite_prompt), target_ids(lm.tokenizer, request.target_new)
        passes = _Passes(lm, h.layer, prefix + target, len(prefix) - 1, len(target))
        query_input = passes.module_input(module)
        query = query_input.float()
        with torch.no_grad():
            layer_out = get_module(lm.model, module)(query_input).float()
        start = layer_out if h.val_init == "warm" else torch.rand(layer_out.shape, generator=torch.Generator().manual_seed(h.seed))
        planned = _plan(Codebook.of(lm.model, module), module, query, start.to(query.device), h.eps, tuple(target))
        trained = self._train(lm, planned, passes, target)
        if planned.entry is not None:
            return CodebookDelta(module, Entry(query.cpu(), trained, planned.entry.eps, planned.entry.label), planned.eps_changes)
        (index,) = planned.value_changes
        before, _ = planned.value_changes[index]
        return CodebookDelta(module, None, planned.eps_changes, {index: (before, trained)})

    def _train(self, lm: LoadedModel, planned: CodebookDelta, passes: "_Passes", target: list[int]) -> torch.Tensor:
        """The trained value of the entry the planned delta adds (or retrains), float32 on the CPU."""
        labels = torch.tensor(target, device=lm.model.device)
        lm_head = get_module(lm.model, lm.arch.lm_head)
        planned.apply(lm.model)
        try:
            book = Codebook.of(lm.model, planned.module)
            live = book.entries[-1] if planned.entry is not None else book.entries[next(iter(planned.value_changes))]
            value = live.value.detach().clone().float().to(lm.model.device).requires_grad_(True)
            live.value = value
            optimiser = torch.optim.Adam([value], lr=self.hparams.edit_lr)
            with torch.enable_grad():
                for _ in range(self.hparams.n_iter):
                    loss = torch.nn.functional.cross_entropy(lm_head(passes.hidden()).float(), labels)
                    (grad,) = torch.autograd.grad(loss, [value], allow_unused=True) if loss.requires_grad else (None,)
                    if grad is None:  # the entry never fires here (an older key at the same distance wins the tie)
                        break
                    value.grad = grad
                    optimiser.step()
            return value.detach().cpu().clone()
        finally:
            planned.revert(lm.model)


class _Passes:
    """Forward passes of one prompt ⊕ target through the blocks from the wrapped layer up.

    Where exact (GPT-J, Llama) only the tokens from the prompt's last one on are re-run, the earlier tokens'
    residual and attention keys/values cached (`SuffixStack`) before the edit's entry exists, as the
    reference replaces only the key position while training; GPT-2 runs the whole model. The query is read
    from the same kind of pass as training uses, so a radius set to exactly its distance (coverage) covers it.
    """

    def __init__(self, lm: LoadedModel, layer: int, sequence: list[int], position: int, n_target: int) -> None:
        self.lm, self.layer, self.depth = lm, layer, num_layers(lm.model)
        device = lm.model.device
        self.stack = SuffixStack(lm, [sequence], [position], layer, self.depth) if lm.arch.embeds_are_residual else None
        self.batch = Batch.from_ids([sequence], lm.tokenizer.pad_token_id, device)
        self.position = 0 if self.stack else position  # the prompt's last token among the re-run columns
        self.columns = torch.arange(self.position, self.position + n_target, device=device)

    def hidden(self) -> torch.Tensor:
        """Final-normed hidden states at the positions that predict the target tokens, (n_target, d)."""
        if self.stack is not None:
            return self.stack.hidden()[0, self.columns]
        return normed_hidden(self.lm, None, self.batch, self.layer, self.depth)[0, self.columns]

    @torch.no_grad()
    def module_input(self, module: str) -> torch.Tensor:
        """The wrapped module's input at the prompt's last token."""
        kept: list[torch.Tensor] = []
        handle = get_module(self.lm.model, module).register_forward_hook(lambda _m, args, _out: kept.append(args[0].detach()))
        try:
            self.hidden()
        finally:
            handle.remove()
        return kept[0][0, self.position]


def _plan(book: Codebook | None, module: str, query: torch.Tensor, start: torch.Tensor, eps: float, label: tuple[int, ...]) -> CodebookDelta:
    """The codebook change of the reference's first iteration, with the value not yet trained."""
    fresh = Entry(query, start, eps, label)
    if book is None or not book.entries:
        return CodebookDelta(module, fresh)
    dist, index = book.nearest(query[None])
    d, j = float(dist[0]), int(index[0])
    nearest = book.entries[j]
    if d > eps + nearest.eps:
        return CodebookDelta(module, fresh)
    if nearest.label != label:
        half = float(torch.tensor(d / 2, dtype=torch.float32))
        split_old = float(torch.tensor(d / 2 - SPLIT_MARGIN, dtype=torch.float32))
        return CodebookDelta(module, Entry(query, start, half, label), [(j, nearest.eps, split_old)])
    grown = [(j, nearest.eps, d)] if d > nearest.eps else []
    current = nearest.value.detach().cpu().clone()
    return CodebookDelta(module, None, grown, {j: (current, current)})
