"""Knowledge Neurons (Dai et al. 2022), as EasyEdit runs it (`models/kn/kn_main.py` and
`knowledge_neurons/knowledge_neurons.py`: `get_refined_neurons`, `get_scores_for_layer`, `modify_weights`).

1. Attribution: for every layer, the "neurons" are the MLP intermediate activations at the prompt's last
   position, i.e. the input of `arch.mlp_out` (the coefficients of its value vectors). Their integrated
   gradients for the probability (softmax, not log) of the attributed token are
       IG_i = a_i · Σ_k ∂P(α_k a)/∂a_i / steps,   α_k = linspace(0, 1, steps)
   with the other layers left as they are; the `steps` scaled copies run `batch_size` per forward pass.
2. Coarse neurons, per prompt: attribution > `adaptive_threshold` × the prompt's maximum attribution over
   all layers and neurons.
3. Selection (`get_refined_neurons`): with `refine` true, the prompts are the rewrite prompt plus its
   context-templated versions (`artifacts.context_templates`; the request has no paraphrases) and a neuron
   is kept when it is coarse in MORE than `p`·(number of prompts) of them (strictly, as the reference).
   With `refine` false the reference keeps every coarse neuron of every prompt (no p filter), and
   `kn_main` passes the rewrite prompt alone, so the selection is the coarse neurons of the rewrite prompt;
   that is what runs here (`p` and the templates are then unused). `max_neurons` (optional) keeps the
   neurons of highest attribution (mean over the prompts).
4. Edit (`modify_weights`, mode "edit"): every selected neuron's value vector (column i of mlp_out's
   (out, in) weight; row i of GPT-2's transposed Conv1D weight) gets
       lr_scale · (E[new] − E[pred])
   with E the INPUT embedding matrix (`arch.embed`, as the reference's `word_embeddings_attr`), `new` the
   first token of the new target and `pred` the unedited model's argmax next token after the rewrite
   prompt: the reference subtracts the model's own greedy prediction, not the true target's embedding (for
   the known facts of the suites the two coincide).

Choices the reference leaves open, or where this implementation differs from it:
- Neurons: the reference hooks the OUTPUT of `mlp.fc_in` (GPT-J/GPT-2, pre-activation) or `mlp.gate_proj`
  (Llama, pre-SiLU, before the product with `up_proj`); here they are the input of `mlp_out`, the
  post-activation coefficients the paper defines and the ones whose value vectors the edit changes.
- Attributed token: the first token of " " + target_true (ROME-style leading space, no special tokens).
  The reference encodes the bare string (no leading space; with BOS for Llama tokenizers) and averages the
  attribution over that many tokens of a greedy continuation whose input ids it never re-encodes for GPT
  models. Without a true target the unedited model's argmax token is attributed.
- Edit tokens: first tokens only, each embedding once, scaled by `lr_scale`. The reference subtracts 2×
  the prediction embedding when the new target is one token and adds each target token once (×1), and
  never reads `lr_scale` (EasyEdit keeps it at 1.0).
- `steps` need not be a multiple of `batch_size` (the reference asserts it is).
- Speed: the blocks below each attributed layer run once per prompt, and the scaled passes run only the
  last token from the attributed block on, the earlier tokens' keys and values cached (architectures whose
  embeddings enter the residual unchanged; GPT-2 re-runs the whole prompt). Same scores up to rounding.
The delta stores only the changed slices (DenseDelta with indices on the raw parameter).
"""

from __future__ import annotations

import collections
from contextlib import contextmanager
from typing import Annotated, Iterator, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from kepitfalls.deltas.codecs import DenseDelta
from kepitfalls.methods.base import EditMethod, EditRequest, Hparams
from kepitfalls.methods.layers import Batch, backbone, normed_hidden, only_layers
from kepitfalls.models.adapters import get_module, num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.primitives import prompt_ids, target_ids


@contextmanager
def replace_input_at(model: nn.Module, module_name: str, position: int, values: torch.Tensor) -> Iterator[None]:
    """Replace a module's input at one sequence position by `values` (batch × features) while open."""

    def hook(_module: nn.Module, args: tuple):
        x = args[0].clone()
        x[:, position] = values.to(x.dtype)
        return (x, *args[1:])

    handle = get_module(model, module_name).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _baseline(lm: LoadedModel, batch: Batch, position: int) -> tuple[list[torch.Tensor | None], list[torch.Tensor], torch.Tensor]:
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
        def hook(_module: nn.Module, args: tuple) -> None:
            activations[layer] = args[0][0, position].detach().clone()

        return hook

    try:
        for layer in range(depth):
            if lm.arch.embeds_are_residual:
                handles.append(get_module(lm.model, lm.arch.layer.format(layer)).register_forward_pre_hook(keep_residual(layer)))
            handles.append(get_module(lm.model, lm.arch.mlp_out.format(layer)).register_forward_pre_hook(keep_activation(layer)))
        logits = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[0, position]
    finally:
        for handle in handles:
            handle.remove()
    assert all(a is not None for a in activations)
    return residuals, activations, logits  # type: ignore[return-value]


class _LastTokenFromBlock:
    """The final-normed hidden state at a prompt's last token, re-run from any block on that token alone.

    A change to the last token's neurons cannot reach the earlier tokens (causal attention), so their
    keys and values at every block are computed once, and each scaled pass runs one query token through
    the remaining blocks instead of the whole prompt. Exact up to float rounding; needs an architecture
    whose embeddings enter the residual stream unchanged and a prompt of two tokens or more.
    """

    def __init__(self, lm: LoadedModel, ids: list[int], residuals: list[torch.Tensor | None]) -> None:
        from transformers import DynamicCache

        self.lm, self.residuals, self.position = lm, residuals, len(ids) - 1
        self.cache = DynamicCache(config=lm.model.config)
        with torch.no_grad():
            backbone(lm)(input_ids=torch.tensor([ids[:-1]], device=lm.model.device), past_key_values=self.cache, use_cache=True)
        self.prefix = [(layer.keys, layer.values) for layer in self.cache.layers]

    def hidden(self, block: int, rows: int) -> torch.Tensor:
        """(rows, 1, d): blocks `block..` run on the last token's residual entering `block`, copied `rows` times."""
        for layer, (keys, values) in zip(self.cache.layers, self.prefix):
            layer.keys, layer.values = keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)
        residual = self.residuals[block]
        assert residual is not None
        device = residual.device
        with only_layers(self.lm.model, self.lm.arch, block, num_layers(self.lm.model)):
            return backbone(self.lm)(
                inputs_embeds=residual[:, -1:].expand(rows, -1, -1),
                position_ids=torch.full((rows, 1), self.position, device=device),
                past_key_values=self.cache, use_cache=True,
            ).last_hidden_state


def attribution_scores(lm: LoadedModel, ids: list[int], token: int, steps: int, batch_size: int, fast: bool = True) -> torch.Tensor:
    """Integrated gradients (layers × neurons) of P(token | ids) w.r.t. the neurons at the last position.

    `fast` re-runs only the last token from each attributed block (`_LastTokenFromBlock`) where that is
    exact; otherwise each scaled pass runs the whole prompt (from the block's cached residual if it can).
    """
    device = lm.model.device
    batch = Batch.from_ids([ids], lm.tokenizer.pad_token_id, device)
    position = len(ids) - 1
    depth = num_layers(lm.model)
    residuals, activations, _ = _baseline(lm, batch, position)
    last_token = _LastTokenFromBlock(lm, ids, residuals) if fast and lm.arch.embeds_are_residual and len(ids) > 1 else None
    lm_head = get_module(lm.model, lm.arch.lm_head)
    alphas = torch.linspace(0, 1, steps, device=device)
    scores = []
    for layer in range(depth):
        base = activations[layer].float()
        grads = torch.zeros_like(base)
        for chunk in alphas.split(batch_size):
            rows = len(chunk)
            scaled = (chunk[:, None] * base[None]).requires_grad_(True)
            if last_token is not None:
                with replace_input_at(lm.model, lm.arch.mlp_out.format(layer), 0, scaled):
                    last = last_token.hidden(layer, rows)[:, 0]
            else:
                sub = Batch(batch.input_ids.expand(rows, -1), batch.attention_mask.expand(rows, -1))
                residual = residuals[layer]
                residual = residual.expand(rows, -1, -1) if residual is not None else None
                with replace_input_at(lm.model, lm.arch.mlp_out.format(layer), position, scaled):
                    last = normed_hidden(lm, residual, sub, layer, depth)[:, position]
            probs = torch.softmax(lm_head(last).float(), dim=-1)[:, token]
            (grad,) = torch.autograd.grad(probs.sum(), scaled)
            grads += grad.sum(0)
        scores.append(base * grads / steps)
    return torch.stack(scores)


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
        """The rewrite prompt, plus its context-templated versions when refining."""
        prompt = request.rewrite_prompt
        if not self.hparams.refine:
            return [prompt]
        return [prompt] + [t.format(prompt) for t in self.artifacts.context_templates if t != "{}"]

    def neurons(self, lm: LoadedModel, request: EditRequest, token: int) -> list[tuple[int, int]]:
        """The selected (layer, neuron) pairs for one request."""
        hp = self.hparams
        score_list = [
            attribution_scores(lm, prompt_ids(lm.tokenizer, prompt), token, int(hp.steps), int(hp.batch_size))
            for prompt in self.prompts(request)
        ]
        max_neurons = hp.max_neurons
        return select_neurons(score_list, float(hp.adaptive_threshold), float(hp.p), bool(hp.refine),
                              None if max_neurons is None else int(max_neurons))

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> DenseDelta:
        if len(requests) != 1:
            raise ValueError("KN edits one request at a time; EditMethod.edit sequences several")
        request = requests[0]
        tok = lm.tokenizer
        ids = prompt_ids(tok, request.rewrite_prompt)
        _, _, logits = _baseline(lm, Batch.from_ids([ids], tok.pad_token_id, lm.model.device), len(ids) - 1)
        predicted = int(logits.argmax())
        attributed = target_ids(tok, request.target_true)[0] if request.target_true else predicted
        selected = self.neurons(lm, request, attributed)

        embeddings = get_module(lm.model, lm.arch.embed).weight
        new = target_ids(tok, request.target_new)[0]
        direction = float(self.hparams.lr_scale) * (embeddings[new].float() - embeddings[predicted].float())
        by_layer: dict[int, list[int]] = collections.defaultdict(list)
        for layer, neuron in selected:
            by_layer[layer].append(neuron)
        changes: dict[str, torch.Tensor] = {}
        indices: dict[str, tuple[int, torch.Tensor]] = {}
        for layer, neurons in sorted(by_layer.items()):
            name = f"{lm.arch.mlp_out.format(layer)}.weight"
            weight = get_module(lm.model, lm.arch.mlp_out.format(layer)).weight
            column = direction.to(weight.dtype).cpu()
            if lm.arch.transposed_weights:  # Conv1D: (in, out), a neuron is a row
                changes[name] = column[None, :].repeat(len(neurons), 1)
                indices[name] = (0, torch.tensor(neurons, dtype=torch.long))
            else:  # nn.Linear: (out, in), a neuron is a column
                changes[name] = column[:, None].repeat(1, len(neurons))
                indices[name] = (1, torch.tensor(neurons, dtype=torch.long))
        return DenseDelta(changes, indices)


__all__ = ["KnowledgeNeurons", "attribution_scores", "select_neurons", "replace_input_at"]
