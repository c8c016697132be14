"""Knowledge Neurons (Dai et al. 2022) in three variants, chosen by `methods.KN.<model>.variant`.

The survey's KN numbers come from EasyEdit (`models/kn/kn_main.py`, `knowledge_neurons/knowledge_neurons.py`),
whose neurons and edit differ from the paper's; `easyedit` (the default in every model block) reproduces that
code as it runs, `dai` is the paper's definition, `dai_sign_aware` fixes `dai`'s edit for negative neurons.

Shared by every variant:
- Attribution (`get_scores_for_layer`): for every layer, the integrated gradients of the probability (softmax,
  not log) of the attributed token w.r.t. the neurons at the prompt's last position,
      IG_i = a_i · Σ_k ∂P(α_k a)/∂a_i / steps,   α_k = linspace(0, 1, steps),
  the other layers left as they are; the reference runs the scaled copies `batch_size` per forward pass
  (and asserts `steps` is a multiple of it); here `batch_size` only bounds the passes of the whole-prompt path
  (see Speed) and changes no score.
- Coarse neurons (`get_coarse_neurons`): score > `adaptive_threshold` × the prompt's maximum over all
  layers and neurons. Selection (`get_refined_neurons`): with `refine` false every coarse neuron of every
  prompt; with `refine` true those coarse in MORE than `p`·(number of prompts). `max_neurons` (not in the
  reference; null everywhere) keeps the neurons of highest mean score.
- The edit adds a vector to each selected neuron's value vector (column i of mlp_out's (out, in) weight,
  row i of GPT-2's Conv1D weight), built from the INPUT embeddings (`arch.embed`, the reference's
  `word_embeddings_attr`), computed in float32 and stored in float32 whatever the model's dtype.

`easyedit` follows EasyEdit's code, bugs included (this variant exists to reproduce published numbers):
- Neurons (`__init__`'s `input_ff_attr`, `get_baseline_with_activations`, `patch_ff_layer`): the OUTPUT of
  the MLP's first projection (`arch.mlp_pre_act`: GPT-J `mlp.fc_in`, GPT-2 `mlp.c_fc`, pre-GELU; Llama
  `mlp.gate_proj`, pre-SiLU and before the product with `up_proj`), not the coefficients of the value
  vectors that the edit changes.
- Prompts (`kn_main.apply_kn_to_model`): the rewrite prompt alone, even with `refine` true (so `refine`
  keeps every coarse neuron of it); encoded with the tokenizer's special tokens (`_prepare_inputs`).
- Attributed tokens (`_prepare_inputs`, `get_scores_for_layer`): `tokenizer.encode(ground_truth)`, the bare
  string with special tokens, so a Llama tokenizer's BOS is the first "target token" and its probability
  is attributed too. Each of the n tokens is attributed in turn and the scores are averaged over them.
  Step i > 0 attributes token i after the prompt extended by i greedy tokens, decoded and re-encoded as
  text, only for model types the reference re-tokenises ('gpt', 'llama', 'qwen*', here the llama adapter,
  SmolLM2 included); GPT-J and GPT-2 ('gptj', 'gpt2') keep the ORIGINAL prompt at every step, so their
  score is the IG of the mean probability of all target tokens at the prompt's last position.
- Edit (`modify_weights`, mode "edit"): with g_1..g_m the greedy continuation of the prompt (`_generate`,
  m = the number of `tokenizer.encode(target_new)` tokens, re-encoded each step) the value vector gets
       Σ_j E[new_j] − Σ_j E[g_j]         (m > 1)
       E[new_1] − 2·E[g_1]                (m = 1: `argmax_tokens[0]` is an int, so its embedding is 1-D and
                                           takes the `* 2` branch; the target's ids are always a list, so
                                           its 2-D embedding takes the loop and is added once).
  A Llama tokenizer's BOS makes every target m ≥ 2, so E[BOS] is added and one more greedy token removed.
  The reference never reads `lr_scale` (1.0 in every block); here it scales the vector in every variant.
- Deviation: without a true target (the reference needs one) the unedited model's argmax token is attributed.

`dai` (the paper's neurons, this module's earlier definition) deviates from EasyEdit in:
- Neurons: the INPUT of `arch.mlp_out` (post-activation coefficients of the value vectors).
- Prompts: with `refine` true, the rewrite prompt plus its context-templated versions
  (`artifacts.context_templates`; a request has no paraphrases).
- Attributed token: the first token of " " + target_true (ROME-style leading space, no special tokens),
  at the end of the prompt; no greedy continuation.
- Edit: E[new_1] − E[pred], first tokens of " " + target_new and of the greedy continuation, each once.
`dai_sign_aware` is `dai` with each neuron's vector multiplied by the sign of its activation a_i on the
rewrite prompt (−1 where a_i < 0, else +1): the neuron adds a_i·v_i to the output, so a change Δ of v_i moves
the output by a_i·Δ, backwards when a_i < 0, as SiLU-gated MLPs' coefficients often are; sign(a_i)·Δ moves it
by |a_i|·Δ, towards E[new] and away from E[pred] for every neuron.

Speed: the blocks below each attributed layer run once per prompt, and the scaled passes run only the last
token from the attributed block on, the earlier tokens' keys and values cached. On architectures whose
embeddings enter the residual unchanged (GPT-J, Llama), every layer's copies go through the blocks in one
sweep (the copies of layer l joining at block l), so each block runs once over all the rows that reach it:
1.9x faster than a pass per layer on SmolLM2 (5.5 against 10.5 s per attributed token, one thread); its
memory grows with depth × steps rows, `batch_size` does not bound it. GPT-2 re-runs the whole prompt,
`batch_size` copies per pass. Exact for every variant: both attributed activations are
per-position. The delta stores only the changed slices (DenseDelta, indices on the raw parameter).
"""

from __future__ import annotations

import collections
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Iterator, Literal, Sequence

import torch
from pydantic import Field, PositiveInt
from torch import nn

from kepitfalls.deltas.codecs import DenseDelta
from kepitfalls.hidden.partial import normed_hidden
from kepitfalls.hidden.suffix import SuffixStack
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.adapters import Architecture, get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.tokens import Batch, prompt_ids, target_ids

VARIANTS: dict[str, str] = {
    "easyedit": "KN as EasyEdit runs it (the survey's numbers): integrated gradients of the MLP's first-projection "
                "output (pre-activation; gate_proj on gated MLPs) for every ground-truth token, value vectors "
                "moved by ΣE[new] − ΣE[greedy] (E[new] − 2·E[pred] for one-token targets).",
    "dai": "KN as Dai et al. define it: integrated gradients of the MLP's post-activation coefficients for the "
           "first target token, value vectors moved by E[new] − E[pred].",
    "dai_sign_aware": "KN as Dai et al. define it, with each value vector moved by sign(a)·(E[new] − E[pred]) so "
                      "that neurons with a negative coefficient a also push towards the new target.",
}
#: Architectures whose greedy continuation EasyEdit re-tokenises between attributed target tokens
#: (`get_scores_for_layer`: model types 'gpt', 'llama', 'qwen*'; never 'gptj' or 'gpt2').
_EASYEDIT_REENCODES = {"gptj": False, "gpt2": False, "llama": True}


def describe(hparams: "KNHparams") -> str:
    """One sentence on the configured variant, for table footnotes."""
    return VARIANTS[hparams.variant]


@dataclass(frozen=True)
class Site:
    """Where a layer's neurons are read and replaced: a module's output (EasyEdit) or input (Dai et al.)."""

    module: str
    output: bool

    @classmethod
    def of(cls, arch: Architecture, variant: str) -> "Site":
        return cls(arch.mlp_pre_act, True) if variant == "easyedit" else cls(arch.mlp_out, False)


@contextmanager
def replace_at(
    model: nn.Module, module_name: str, output: bool, position: int, values: torch.Tensor, first_row: int = 0
) -> Iterator[None]:
    """Replace a module's input or output at one sequence position by `values` (rows × features) while open,
    in the batch's rows from `first_row` on."""

    def replaced(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[first_row:, position] = values.to(x.dtype)
        return x

    module = get_module(model, module_name)
    if output:
        handle = module.register_forward_hook(lambda _module, _args, out: replaced(out))
    else:
        handle = module.register_forward_pre_hook(lambda _module, args: (replaced(args[0]), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _baseline(lm: LoadedModel, batch: Batch, position: int, site: Site) -> tuple[list[torch.Tensor | None], list[torch.Tensor], torch.Tensor]:
    """Per layer: the residual entering the block (None where a restart is not exact) and the neurons'
    activations at `position`; plus the next-token logits there. One forward pass."""
    depth = num_layers(lm.model)
    residuals: list[torch.Tensor | None] = [None] * depth
    activations: list[torch.Tensor | None] = [None] * depth
    handles = []

    def keep_residual(layer: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            residuals[layer] = args[0].detach()

        return hook

    def keep_activation(layer: int):
        def keep(x: torch.Tensor) -> None:
            activations[layer] = x[0, position].detach().clone()

        if site.output:
            return lambda _module, _args, out: keep(out)
        return lambda _module, args: keep(args[0])

    try:
        for layer in range(depth):
            if lm.arch.embeds_are_residual:
                handles.append(get_module(lm.model, lm.arch.layer.format(layer)).register_forward_pre_hook(keep_residual(layer)))
            module = get_module(lm.model, site.module.format(layer))
            register = module.register_forward_hook if site.output else module.register_forward_pre_hook
            handles.append(register(keep_activation(layer)))
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[0, position]
    finally:
        for handle in handles:
            handle.remove()
    assert all(a is not None for a in activations)
    return residuals, activations, logits  # type: ignore[return-value]


def attribution_scores(
    lm: LoadedModel, ids: list[int], tokens: Sequence[int], steps: int, batch_size: int, site: Site, fast: bool = True
) -> torch.Tensor:
    """Integrated gradients (layers × neurons at `site`) of the mean probability of `tokens` after `ids`.

    The mean over several tokens is EasyEdit's average of per-token scores at one prompt (IG is linear in
    the attributed function). `fast`, where exact, runs every layer's scaled copies in one sweep over the blocks
    on the last token only (`_sweep_gradients`); otherwise each layer's copies run the whole prompt,
    `batch_size` per pass (from the block's cached residual if it can).
    """
    position = len(ids) - 1
    depth = num_layers(lm.model)
    batch = Batch.from_ids([ids], lm.tokenizer.pad_token_id, lm.model.device)
    residuals, activations, _ = _baseline(lm, batch, position, site)
    alphas = torch.linspace(0, 1, steps, device=lm.model.device)
    if fast and lm.arch.embeds_are_residual and len(ids) > 1:
        grads = _sweep_gradients(lm, ids, tokens, alphas, site, residuals, activations)
    else:
        grads = [_whole_prompt_gradients(lm, batch, tokens, alphas, batch_size, site, layer, residuals[layer], activations[layer])
                 for layer in range(depth)]
    return torch.stack([activations[layer].float() * grads[layer] / steps for layer in range(depth)])


def _probability(lm: LoadedModel, last: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Per row, the mean probability of `tokens` from final-normed hidden states (softmax in float32)."""
    return torch.softmax(get_module(lm.model, lm.arch.lm_head)(last).float(), dim=-1)[:, list(tokens)].mean(-1)


def _sweep_gradients(
    lm: LoadedModel, ids: list[int], tokens: Sequence[int], alphas: torch.Tensor, site: Site,
    residuals: list[torch.Tensor | None], activations: list[torch.Tensor],
) -> list[torch.Tensor]:
    """Per layer, Σ_k ∂P/∂(α_k a) at the prompt's last token, every layer in one pass over the blocks.

    The scaled copies of layer l join the batch at block l (the unedited residual entering it, their
    activation replaced there); the copies of earlier layers run on through block l unchanged. Each block
    thus runs once over all the rows that reach it, with the earlier tokens' keys and values cached
    (`SuffixStack`), instead of once per attributed layer with `batch_size` rows: the same sums (rows are
    independent), in a few large matrix products instead of many small ones.
    """
    depth, steps = num_layers(lm.model), len(alphas)
    stack = SuffixStack(lm, [ids], [len(ids) - 1], 0, depth)
    leaves: list[torch.Tensor] = []
    state: torch.Tensor | None = None
    for layer in range(depth):
        scaled = (alphas[:, None] * activations[layer].float()[None]).requires_grad_(True)
        leaves.append(scaled)
        entering = residuals[layer][:, -1:].expand(steps, -1, -1)  # type: ignore[index]
        state = entering if state is None else torch.cat([state, entering])
        with replace_at(lm.model, site.module.format(layer), site.output, 0, scaled, first_row=len(state) - steps):
            state = stack.block(state, layer)
    assert state is not None
    last = get_module(lm.model, lm.arch.final_norm)(state[:, 0])
    return [grad.sum(0) for grad in torch.autograd.grad(_probability(lm, last, tokens).sum(), leaves)]


def _whole_prompt_gradients(
    lm: LoadedModel, batch: Batch, tokens: Sequence[int], alphas: torch.Tensor, batch_size: int, site: Site, layer: int,
    residual: torch.Tensor | None, activation: torch.Tensor,
) -> torch.Tensor:
    """One layer's Σ_k ∂P/∂(α_k a), its scaled copies running the whole prompt `batch_size` per pass."""
    position = batch.input_ids.shape[1] - 1
    depth = num_layers(lm.model)
    base = activation.float()
    grads = torch.zeros_like(base)
    for chunk in alphas.split(batch_size):
        rows = len(chunk)
        scaled = (chunk[:, None] * base[None]).requires_grad_(True)
        sub = Batch(batch.input_ids.expand(rows, -1), batch.attention_mask.expand(rows, -1))
        start = residual.expand(rows, -1, -1) if residual is not None else None
        with replace_at(lm.model, site.module.format(layer), site.output, position, scaled):
            last = normed_hidden(lm, start, sub, layer, depth)[:, position]
        (grad,) = torch.autograd.grad(_probability(lm, last, tokens).sum(), scaled)
        grads += grad.sum(0)
    return grads


@torch.no_grad()
def greedy_contexts(lm: LoadedModel, prompt: str, steps: int) -> list[tuple[list[int], int]]:
    """EasyEdit's greedy loop (`_generate`): per step, the prompt extended by the argmax tokens so far,
    decoded and re-encoded as text, and the argmax token after it."""
    contexts = []
    text = prompt
    for _ in range(steps):
        ids = prompt_ids(lm.tokenizer, text)
        token = int(lm.model(input_ids=torch.tensor([ids], device=lm.model.device)).logits[0, -1].argmax())
        contexts.append((ids, token))
        text += lm.tokenizer.decode([token])
    return contexts


def easyedit_direction(lm: LoadedModel, prompt: str, target_new: str) -> torch.Tensor:
    """EasyEdit's edit vector (`modify_weights`): Σ_j E[new_j] − Σ_j E[g_j], or E[new] − 2·E[g_1] when
    `tokenizer.encode(target_new)` is one token; g the greedy continuation of the prompt. Float32."""
    embeddings = get_module(lm.model, lm.arch.embed).weight
    new = prompt_ids(lm.tokenizer, target_new)  # tokenizer.encode: bare string, special tokens included
    greedy = [token for _, token in greedy_contexts(lm, prompt, len(new))]
    added = embeddings[new].float().sum(0)
    if len(new) == 1:
        return added - 2 * embeddings[greedy[0]].float()
    return added - embeddings[greedy].float().sum(0)


def select_neurons(
    score_list: list[torch.Tensor], adaptive_threshold: float, p: float, refine: bool, max_neurons: int | None
) -> list[tuple[int, int]]:
    """(layer, neuron) pairs: coarse per prompt, then shared by more than p of the prompts when refining."""
    counts: collections.Counter[tuple[int, int]] = collections.Counter()
    for scores in score_list:
        threshold = scores.max().item() * adaptive_threshold
        for layer, neuron in torch.nonzero(scores > threshold).tolist():
            counts[(layer, neuron)] += 1
    if refine:
        selected = [n for n, count in counts.items() if count > p * len(score_list)]
    else:
        selected = list(counts)
    if max_neurons is not None and len(selected) > max_neurons:
        mean = torch.stack(score_list).mean(0)
        selected = sorted(selected, key=lambda n: -mean[n].item())[:max_neurons]
    return sorted(selected)


def value_delta(lm: LoadedModel, selected: list[tuple[int, int]], direction: torch.Tensor, scales: list[float]) -> DenseDelta:
    """scale·direction added to each selected neuron's value vector; only those slices stored, in float32."""
    by_layer: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
    for (layer, neuron), scale in zip(selected, scales, strict=True):
        by_layer[layer].append((neuron, scale))
    direction = direction.float().cpu()
    changes: dict[str, torch.Tensor] = {}
    indices: dict[str, tuple[int, torch.Tensor]] = {}
    for layer, entries in sorted(by_layer.items()):
        name = f"{lm.arch.mlp_out.format(layer)}.weight"
        neurons = torch.tensor([neuron for neuron, _ in entries], dtype=torch.long)
        rows = torch.tensor([scale for _, scale in entries])[:, None] * direction[None]
        if lm.arch.transposed_weights:  # Conv1D: (in, out), a neuron is a row
            changes[name], indices[name] = rows, (0, neurons)
        else:  # nn.Linear: (out, in), a neuron is a column
            changes[name], indices[name] = rows.T.contiguous(), (1, neurons)
    return DenseDelta(changes, indices)


class KNHparams(Hparams):
    """KN's `methods.KN.<model>` block (EasyEdit's hparams/KN/*.yaml); `max_neurons` null keeps every one."""

    steps: PositiveInt
    batch_size: PositiveInt
    adaptive_threshold: Annotated[float, Field(ge=0, le=1)]
    p: Annotated[float, Field(ge=0, le=1)]
    refine: bool
    lr_scale: float
    max_neurons: PositiveInt | None
    variant: Literal["easyedit", "dai", "dai_sign_aware"]


class KnowledgeNeurons(EditMethod):
    """Knowledge-neuron editing: value vectors of the attributed neurons moved from E[pred] to E[new]."""

    name = "KN"
    hparams_type = KNHparams

    def prompts(self, request: EditRequest) -> list[str]:
        """The rewrite prompt, plus its context-templated versions when refining (`dai` variants only)."""
        prompt = request.rewrite_prompt
        if self.hparams.variant == "easyedit" or not self.hparams.refine:
            return [prompt]
        return [prompt] + [t.format(prompt) for t in self.artifacts.context_templates if t != "{}"]

    def scores(self, lm: LoadedModel, prompt: str, truth: list[int]) -> torch.Tensor:
        """One prompt's attribution, averaged over the attributed tokens (`get_scores_for_layer`)."""
        variant = self.hparams.variant
        if variant == "easyedit" and _EASYEDIT_REENCODES[lm.arch.name]:
            contexts = [ids for ids, _ in greedy_contexts(lm, prompt, len(truth))]
        else:
            contexts = [prompt_ids(lm.tokenizer, prompt)] * len(truth)
        groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
        for ids, token in zip(contexts, truth):
            groups[tuple(ids)].append(token)
        site = Site.of(lm.arch, variant)
        steps, batch_size = self.hparams.steps, self.hparams.batch_size
        return sum(
            len(tokens) * attribution_scores(lm, list(ids), tokens, steps, batch_size, site) for ids, tokens in groups.items()
        ) / len(truth)

    def neurons(self, lm: LoadedModel, request: EditRequest, truth: list[int]) -> list[tuple[int, int]]:
        """The selected (layer, neuron) pairs for one request."""
        hp = self.hparams
        score_list = [self.scores(lm, prompt, truth) for prompt in self.prompts(request)]
        return select_neurons(score_list, hp.adaptive_threshold, hp.p, hp.refine, hp.max_neurons)

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> DenseDelta:
        if len(requests) != 1:
            raise ValueError("KN edits one request at a time; EditMethod.edit sequences several")
        variant = self.hparams.variant
        request = requests[0]
        tok = lm.tokenizer
        ids = prompt_ids(tok, request.rewrite_prompt)
        batch = Batch.from_ids([ids], tok.pad_token_id, lm.model.device)
        _, activations, logits = _baseline(lm, batch, len(ids) - 1, Site.of(lm.arch, variant))
        predicted = int(logits.argmax())
        if variant == "easyedit":  # tokenizer.encode(ground_truth): bare string, special tokens included
            truth = prompt_ids(tok, request.target_true) if request.target_true else [predicted]
            selected = self.neurons(lm, request, truth)
            direction = easyedit_direction(lm, request.rewrite_prompt, request.target_new)
        else:
            selected = self.neurons(lm, request, [target_ids(tok, request.target_true)[0] if request.target_true else predicted])
            embeddings = get_module(lm.model, lm.arch.embed).weight
            direction = embeddings[target_ids(tok, request.target_new)[0]].float() - embeddings[predicted].float()
        if variant == "dai_sign_aware":
            scales = [-1.0 if activations[layer][neuron] < 0 else 1.0 for layer, neuron in selected]
        else:
            scales = [1.0] * len(selected)
        return value_delta(lm, selected, self.hparams.lr_scale * direction, scales)


__all__ = [
    "VARIANTS", "KnowledgeNeurons", "Site", "attribution_scores", "describe", "easyedit_direction", "greedy_contexts",
    "replace_at", "select_neurons", "value_delta",
]
