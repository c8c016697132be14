"""Forward hooks on one decoder module: read its input or output, or replace its output, during a pass."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from kepitfalls.models.adapters import get_module
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch, subject_last_index


class _StopForward(Exception):
    """Raised from a hook once the wanted activation is captured, so later layers are not run."""


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
