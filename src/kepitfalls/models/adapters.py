"""Architecture adapters: where each part of a decoder lives, by module-name template.

Editing methods address modules through these templates ("the MLP output projection of layer 5") so that
one ROME implementation serves GPT-J, GPT-2 and Llama. GPT-2's Conv1D stores its weight as (in, out),
transposed relative to `nn.Linear`; `linear_weight` hides that by returning an (out, in) view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """Module-name templates of one decoder family; `{}` stands for the layer index."""

    name: str
    layers: str
    layer: str
    mlp: str
    mlp_in: str
    mlp_out: str
    #: The projection whose output the MLP's activation function reads (Llama's gate_proj, not up_proj):
    #: the activation EasyEdit's KN attributes.
    mlp_pre_act: str
    attn: str
    embed: str
    final_norm: str
    lm_head: str
    transposed_weights: bool = False
    #: False where the embedding layer adds something (GPT-2's position embeddings) before block 0, so a
    #: forward pass cannot restart from a cached residual through `inputs_embeds`.
    embeds_are_residual: bool = True


GPTJ = Architecture(
    name="gptj",
    layers="transformer.h",
    layer="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_in="transformer.h.{}.mlp.fc_in",
    mlp_out="transformer.h.{}.mlp.fc_out",
    mlp_pre_act="transformer.h.{}.mlp.fc_in",
    attn="transformer.h.{}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
)

GPT2 = Architecture(
    name="gpt2",
    layers="transformer.h",
    layer="transformer.h.{}",
    mlp="transformer.h.{}.mlp",
    mlp_in="transformer.h.{}.mlp.c_fc",
    mlp_out="transformer.h.{}.mlp.c_proj",
    mlp_pre_act="transformer.h.{}.mlp.c_fc",
    attn="transformer.h.{}.attn",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    transposed_weights=True,
    embeds_are_residual=False,
)

LLAMA = Architecture(
    name="llama",
    layers="model.layers",
    layer="model.layers.{}",
    mlp="model.layers.{}.mlp",
    mlp_in="model.layers.{}.mlp.up_proj",
    mlp_out="model.layers.{}.mlp.down_proj",
    mlp_pre_act="model.layers.{}.mlp.gate_proj",
    attn="model.layers.{}.self_attn",
    embed="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
)

ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in (GPTJ, GPT2, LLAMA)}


def architecture_of(model: nn.Module) -> Architecture:
    """The adapter for a loaded Hugging Face model, from its `config.model_type`."""
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise ValueError(f"no architecture adapter for model_type {model_type!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at a dotted name, with a clear error for a wrong template."""
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise KeyError(f"model {type(model).__name__} has no module {name!r}") from error


def linear_weight(model: nn.Module, module_name: str) -> torch.Tensor:
    """The weight of a linear-like module as an (out, in) view sharing storage with the parameter."""
    weight = get_module(model, module_name).weight
    return weight.T if architecture_of(model).transposed_weights else weight


def num_layers(model: nn.Module) -> int:
    """How many decoder blocks the model has."""
    return len(get_module(model, architecture_of(model).layers))
