"""Partial forward passes: some blocks only, restarted from a residual stream captured at a block."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from kepitfalls.hidden.hooks import capture, run_keeping_output
from kepitfalls.models.adapters import Architecture, get_module
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch


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


@contextmanager
def without_final_norm(lm: LoadedModel) -> Iterator[None]:
    """Temporarily replace the final norm by the identity, so a partial forward returns a block's raw output."""
    parent_name, attr = lm.arch.final_norm.rsplit(".", 1)
    parent = get_module(lm.model, parent_name)
    norm = getattr(parent, attr)
    setattr(parent, attr, nn.Identity())
    try:
        yield
    finally:
        setattr(parent, attr, norm)


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
