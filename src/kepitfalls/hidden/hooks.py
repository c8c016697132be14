"""Reading and steering hidden states inside a decoder, shared by the locate-then-edit methods."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from kepitfalls.models.adapters import Architecture, get_module
from kepitfalls.models.loading import LoadedModel


class _StopForward(Exception):
    """Raised from a hook once the wanted activation is captured, so later layers are not run."""


@dataclass
class Batch:
    """Right-padded token ids with an attention mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @classmethod
    def from_ids(cls, sequences: Sequence[list[int]], pad_id: int, device: torch.device) -> "Batch":
        width = max(len(seq) for seq in sequences)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return cls(ids.to(device), mask.to(device))


def subject_last_index(tokenizer: PreTrainedTokenizerBase, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of `template.format(subject)` and the index of the subject's last token.

    Found through character offsets, so it holds for tokenizers that add BOS and for subjects anywhere in
    the prompt (ROME's "subject_last" fact token).
    """
    if template.count("{}") != 1:
        raise ValueError(f"prompt {template!r} must mark the subject {subject!r} with exactly one '{{}}'")
    start = template.index("{}")
    end = start + len(subject)
    text = template.format(subject)
    encoded = tokenizer(text, return_offsets_mapping=True)
    hits = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start and b > a]
    if not hits:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    return encoded["input_ids"], hits[-1]


def subject_reprs(
    lm: LoadedModel, module: str, prompts: Sequence[str], subjects: Sequence[str], output: bool = False
) -> torch.Tensor:
    """A module's input (or output) at each prompt's subject-last token, one row per prompt."""
    encoded = [subject_last_index(lm.tokenizer, p, s) for p, s in zip(prompts, subjects, strict=True)]
    batch = Batch.from_ids([ids for ids, _ in encoded], lm.tokenizer.pad_token_id, lm.model.device)
    inputs, outputs = capture(lm, module, batch, want_output=output)
    reprs = outputs if output else inputs
    assert reprs is not None
    return torch.stack([reprs[row, index] for row, (_, index) in enumerate(encoded)])


def capture(
    lm: LoadedModel, module_name: str, batch: Batch, want_output: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input (and optionally output) of one module for a batch; stops the forward pass right after it."""
    return capture_many(lm, [module_name], batch, want_output)[module_name]


def capture_many(
    lm: LoadedModel, module_names: Sequence[str], batch: Batch, want_output: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Input (and optionally output) of several modules from ONE forward pass, stopped once all are seen.

    One pass serves every layer the statistics need, instead of one truncated pass per layer.
    """
    wanted = set(module_names)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            out = (output[0] if isinstance(output, tuple) else output).detach() if want_output else None
            captured[name] = (args[0].detach(), out)
            if set(captured) == wanted:
                raise _StopForward

        return hook

    handles = [get_module(lm.model, name).register_forward_hook(hook_for(name)) for name in wanted]
    try:
        with torch.no_grad():
            lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = wanted - set(captured)
    if missing:
        raise ValueError(f"modules {sorted(missing)} did not run in the forward pass")
    return captured


@contextmanager
def add_to_output(model: nn.Module, module_name: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace a module's output by `edit(output)` while the context is open."""

    def hook(_module: nn.Module, _args: tuple, output):
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    handle = get_module(model, module_name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def only_layers(model: nn.Module, arch: Architecture, start: int, stop: int) -> Iterator[None]:
    """Temporarily keep only blocks `start..stop-1`, so a forward from a cached residual skips the rest."""
    parent_name, attr = arch.layers.rsplit(".", 1)
    parent = get_module(model, parent_name)
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(full)[start:stop]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


def backbone(lm: LoadedModel) -> nn.Module:
    """The decoder without its LM head (`transformer` or `model`)."""
    return get_module(lm.model, lm.arch.layers.split(".")[0])


def hidden_from_layer(
    lm: LoadedModel, residual: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """Run blocks `start..stop-1` and the final norm on a residual stream captured at block `start`.

    Exact for architectures whose embeddings enter the residual stream unchanged (GPT-J, Llama): the
    caller checks `arch.embeds_are_residual`.
    """
    with only_layers(lm.model, lm.arch, start, stop):
        return backbone(lm)(inputs_embeds=residual, attention_mask=attention_mask).last_hidden_state


def run_keeping_output(lm: LoadedModel, module_name: str, batch: Batch) -> torch.Tensor:
    """A full forward pass (gradients allowed) that returns one module's output."""
    kept: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _args: tuple, output) -> None:
        kept["output"] = output[0] if isinstance(output, tuple) else output

    handle = get_module(lm.model, module_name).register_forward_hook(hook)
    try:
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    return kept["output"]


def residual_entering(lm: LoadedModel, layer: int, batch: Batch) -> torch.Tensor | None:
    """The residual stream entering block `layer`, or None where restarting from it would not be exact."""
    if not lm.arch.embeds_are_residual:
        return None
    residual, _ = capture(lm, lm.arch.layer.format(layer), batch)
    return residual


def normed_hidden(lm: LoadedModel, residual: torch.Tensor | None, batch: Batch, start: int, stop: int) -> torch.Tensor:
    """Final-normed output of block `stop - 1`: from the cached residual at `start`, else a full pass."""
    if residual is not None:
        return hidden_from_layer(lm, residual, batch.attention_mask, start, stop)
    block_output = run_keeping_output(lm, lm.arch.layer.format(stop - 1), batch)
    return get_module(lm.model, lm.arch.final_norm)(block_output)


class SuffixStack:
    """Blocks `start..stop-1` re-run on each prompt's suffix only, the prefixes' keys and values cached.

    A change made at block `start` to a prompt's token `split[row]` (ROME's δ at the subject's last token)
    cannot reach earlier tokens, so the prefix `[0, split)` of every row is run once and its attention
    keys/values are kept; every optimisation step then runs only the suffix tokens. Exact up to float
    rounding; needs an architecture whose embeddings enter the residual stream unchanged.
    """

    def __init__(self, lm: LoadedModel, sequences: Sequence[list[int]], split: Sequence[int], start: int, stop: int) -> None:
        from transformers import DynamicCache

        device = lm.model.device
        self.lm, self.start, self.stop = lm, start, stop
        full = Batch.from_ids(sequences, lm.tokenizer.pad_token_id, device)
        residual, _ = capture(lm, lm.arch.layer.format(start), full)
        self.split = torch.tensor(list(split), device=device)
        self.suffix_len = torch.tensor([len(s) - k for s, k in zip(sequences, split)], device=device)
        width_p, width_s = max(max(split), 1), int(self.suffix_len.max())
        rows = len(sequences)
        prefix = residual.new_zeros(rows, width_p, residual.shape[-1])
        suffix = residual.new_zeros(rows, width_s, residual.shape[-1])
        for row, (seq, k) in enumerate(zip(sequences, split)):
            prefix[row, :k] = residual[row, :k]
            suffix[row, : len(seq) - k] = residual[row, k : len(seq)]
        self.suffix = suffix
        dtype = residual.dtype
        p_pos = torch.arange(width_p, device=device)
        s_pos = torch.arange(width_s, device=device)
        prefix_valid = p_pos[None, :] < self.split[:, None]  # (rows, width_p)
        suffix_valid = s_pos[None, :] < self.suffix_len[:, None]
        # Prefix pass: causal within the valid prefix; padded queries see themselves (their output is unused).
        allowed_p = (p_pos[None, :, None] >= p_pos[None, None, :]) & prefix_valid[:, None, :]
        allowed_p |= torch.eye(width_p, dtype=torch.bool, device=device)[None]
        # Suffix pass: the row's valid prefix, then causal within the valid suffix.
        causal_s = (s_pos[:, None] >= s_pos[None, :])[None] & suffix_valid[:, None, :]
        causal_s |= torch.eye(width_s, dtype=torch.bool, device=device)[None]
        allowed_s = torch.cat([prefix_valid[:, None, :].expand(rows, width_s, width_p), causal_s], dim=2)
        self.mask_s = _additive(allowed_s, dtype)
        self.positions_s = self.split[:, None] + s_pos[None, :]
        self.cache = DynamicCache(config=lm.model.config)
        with torch.no_grad(), only_layers(lm.model, lm.arch, start, stop):
            backbone(lm)(
                inputs_embeds=prefix, attention_mask=_additive(allowed_p, dtype), position_ids=p_pos[None].expand(rows, -1),
                past_key_values=self.cache, use_cache=True,
            )
        self._saved = [(layer.keys, layer.values) for layer in self.cache.layers]

    def hidden(self) -> torch.Tensor:
        """Final-normed outputs of block `stop - 1` for the suffix tokens, shape (rows, max suffix, d)."""
        for layer, (keys, values) in zip(self.cache.layers, self._saved):
            layer.keys, layer.values = keys, values
        with only_layers(self.lm.model, self.lm.arch, self.start, self.stop):
            return backbone(self.lm)(
                inputs_embeds=self.suffix, attention_mask=self.mask_s, position_ids=self.positions_s,
                past_key_values=self.cache, use_cache=True,
            ).last_hidden_state


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean (rows, queries, keys) mask as the additive (rows, 1, queries, keys) float mask attention adds."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
