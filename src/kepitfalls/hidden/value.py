"""Optimising the output of one module at the subject's last token: ROME's v* and MEMIT's z*.

Follows `rome/compute_v.py` and `memit/compute_z.py`: δ added to the module's output at the subject's last
token of every context-templated prompt (and of "{subject} is a"), optimised with Adam so that each prompt
predicts the new target (mean NLL per prompt over its target tokens), plus `kl_factor`·KL(current ‖ initial)
of the next-token distribution at the subject token of "{subject} is a", plus weight decay
`v_weight_decay`·‖δ‖/‖v₀‖²; after each step ‖δ‖ is clamped to `clamp_norm_factor`·‖v₀‖; stops once the
loss is below 0.05 (the last step's loss is computed but not stepped on, as the references).

Speed (the references re-run the full model every step): blocks below the edited one run once per edit;
each step re-runs only the tokens from the subject's last one onwards, from the cached residual, with the
earlier tokens' attention keys and values cached (`SuffixStack`); logits only where the loss reads them.
Prompt and target are concatenated as token ids rather than re-tokenised from decoded text.

Precision: v₀, δ and the losses are float32 whatever the model's dtype; δ is cast to the model's dtype where
it is added (its gradient flows back through the cast), and logits are upcast before the softmax. With
`compute_dtype: bfloat16` the loop's forward passes run under autocast (matrix products in bfloat16, the
cached prefix and v₀ as computed in float32); the default float32 leaves the maths as the references do.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

import torch

from kepitfalls.hidden.hooks import add_to_output, capture
from kepitfalls.hidden.partial import normed_hidden
from kepitfalls.hidden.suffix import SuffixStack
from kepitfalls.models.adapters import get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.tokens import Batch, subject_last_index, target_ids

if TYPE_CHECKING:  # the schema lives with the methods; this module is below them
    from kepitfalls.methods.base import ValueHparams

EARLY_STOP_LOSS = 5e-2
KL_PROMPT = "{} is a"


class _ShiftedRunner:
    """Forward passes of the optimisation prompts with δ added to one module's output at the subject token.

    Where exact (GPT-J, Llama) only the tokens from the subject's last one onwards are re-run each step,
    from the residual entering the edited layer, with the earlier tokens' keys and values cached
    (`SuffixStack`); otherwise (GPT-2) the whole model runs each step.
    """

    def __init__(self, lm: LoadedModel, prompts: list[tuple[list[int], int]], module: str, layer: int, loss_layer: int) -> None:
        self.lm, self.module, self.layer, self.loss_layer = lm, module, layer, loss_layer
        sequences = [ids for ids, _ in prompts]
        self.lookup = torch.tensor([index for _, index in prompts], device=lm.model.device)
        self.rows = torch.arange(len(prompts), device=lm.model.device)
        self.stack: SuffixStack | None = None
        if lm.arch.embeds_are_residual:
            self.stack = SuffixStack(lm, sequences, [index for _, index in prompts], layer, loss_layer + 1)
            self.offset = self.lookup  # hidden-state columns count from each row's subject token
        else:
            self.batch = Batch.from_ids(sequences, lm.tokenizer.pad_token_id, lm.model.device)
            self.offset = torch.zeros_like(self.lookup)

    def hidden(self, delta: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states at the loss layer with δ added to the MLP output at the subject."""
        columns = self.lookup - self.offset

        def shift(output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            output[self.rows, columns] += delta.to(output.dtype)
            return output

        with add_to_output(self.lm.model, self.module, shift):
            if self.stack is not None:
                return self.stack.hidden()
            return normed_hidden(self.lm, None, self.batch, self.layer, self.loss_layer + 1)


def _compute_precision(compute_dtype: str, device: torch.device) -> torch.autocast:
    """The optimisation's forward passes in `compute_dtype` (hparams `compute_dtype`): float32 leaves them as
    they are; bfloat16 autocasts the matrix products (AMX on recent CPUs), their backward following."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=compute_dtype == "bfloat16")


def _compute_model(lm: LoadedModel, compute_dtype: str) -> LoadedModel:
    """The model the loop's passes run on: `lm` itself in float32; for bfloat16 a copy of it (edits applied
    so far included) with bfloat16 weights, made once per optimisation. Autocast alone re-casts every
    frozen weight at every pass (it caches only weights that need a gradient), which made it 1.4x slower
    than float32 on SmolLM2; the copy costs the model's size in bfloat16 while the optimisation runs."""
    if compute_dtype == "float32":
        return lm
    model = copy.deepcopy(lm.model).to(torch.bfloat16)
    # PyTorch's fused CPU attention is ~20x slower backward in bfloat16 than in float32 (7 of 17 s per edit);
    # the plain attention runs as matrix products, which bfloat16 speeds up, with its softmax in float32.
    model.set_attn_implementation("eager")
    return dataclasses.replace(lm, model=model)


def optimise_output(
    lm: LoadedModel, module: str, layer: int, request: EditRequest, hparams: ValueHparams, templates: list[str]
) -> torch.Tensor:
    """The output of `module` (in block `layer`) at the subject's last token that makes the model say the
    new target: ROME's v* (module = the block's MLP) or MEMIT's z* (module = the block itself)."""
    tokenizer, device = lm.tokenizer, lm.model.device
    target = target_ids(tokenizer, request.target_new)
    rewrites = [subject_last_index(tokenizer, t.format(request.prompt), request.subject) for t in templates]
    kl_ids, kl_lookup = subject_last_index(tokenizer, KL_PROMPT, request.subject)
    prompts = [(ids + target[:-1], index) for ids, index in rewrites] + [(kl_ids, kl_lookup)]

    # The unedited output at the subject's last token of the bare prompt (the "{}" template).
    first = Batch.from_ids([prompts[0][0]], tokenizer.pad_token_id, device)
    _, output = capture(lm, module, first, want_output=True)
    v_init = output[0, prompts[0][1]].float().clone()

    loss_layer = max(hparams.v_loss_layer % num_layers(lm.model), layer)
    compute_lm = _compute_model(lm, hparams.compute_dtype)
    with _compute_precision(hparams.compute_dtype, device):
        runner = _ShiftedRunner(compute_lm, prompts, module, layer, loss_layer)
    n_rewrites, n_target = len(rewrites), len(target)
    # Positions predicting each target token (ids = prompt + target[:-1]); the KL term is read at the KL
    # prompt's subject token, as both references do (`lookup_idxs` in compute_v / compute_z).
    rows = torch.arange(n_rewrites, device=device).repeat_interleave(n_target)
    cols = torch.cat([torch.arange(len(ids) - n_target, len(ids)) for ids, _ in prompts[:n_rewrites]]).to(device)
    cols = cols - runner.offset[rows]
    kl_col = kl_lookup - int(runner.offset[-1])
    labels = torch.tensor(target, device=device).repeat(n_rewrites)
    lm_head = get_module(compute_lm.model, lm.arch.lm_head)

    delta = torch.zeros_like(v_init, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=hparams.v_lr)
    max_norm = hparams.clamp_norm_factor * v_init.norm()
    kl_init: torch.Tensor | None = None
    for step in range(hparams.v_num_grad_steps):
        optimiser.zero_grad()
        with _compute_precision(hparams.compute_dtype, device):
            hidden = runner.hidden(delta)
            logits, kl_logits = lm_head(hidden[rows, cols]), lm_head(hidden[n_rewrites:, kl_col])
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        nll = -log_probs.gather(1, labels[:, None]).view(n_rewrites, n_target).sum(1) / n_target
        kl_log_probs = torch.log_softmax(kl_logits.float(), dim=-1)
        if kl_init is None:
            kl_init = kl_log_probs.detach().clone()
        kl_loss = hparams.kl_factor * torch.nn.functional.kl_div(kl_init, kl_log_probs, log_target=True, reduction="batchmean")
        decay = hparams.v_weight_decay * (delta.norm() / v_init.norm() ** 2)
        loss = nll.mean() + kl_loss + decay
        if loss.item() < EARLY_STOP_LOSS or step == hparams.v_num_grad_steps - 1:
            break
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    return (v_init + delta).detach()
