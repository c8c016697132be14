"""Loading a materialised model for scoring and editing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kepitfalls.models.adapters import Architecture, architecture_of
from kepitfalls.models.materialize import MANIFEST
from kepitfalls.models.registry import get_spec, resolve_spec


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer, adapter and identity string (used in delta keys)."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arch: Architecture
    identity: str


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token (EOS, as the reference code does); padding side is set per call."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def wrap(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, identity: str) -> LoadedModel:
    """Wrap an in-memory model (a tiny test model, say) the same way a loaded one is."""
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(name, model, prepare_tokenizer(tokenizer), architecture_of(model), identity)


def load_model(model_dir: Path | str, device: str | None = None, model_dtype: str | None = None) -> LoadedModel:
    """Load `models/<name>/` as written by the `model` stage, in the dtype it was written in.

    `model_dtype` (params; None: the spec's dtype) is checked against the manifest, so a directory left
    from another dtype is refused rather than edited under the wrong identity.
    """
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    source = manifest.get("path") or manifest["name"]  # a local model's spec is found again by its path
    spec = get_spec(source)
    wanted = resolve_spec(source, model_dtype).dtype
    if manifest["dtype"] != wanted:
        raise ValueError(
            f"{model_dir} holds {manifest['dtype']} weights but params model_dtype asks for {wanted}; "
            "re-run the model stage"
        )
    device = device or (spec.device if spec.device != "cuda" or torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, manifest["dtype"]))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return wrap(spec.name, model.to(device), tokenizer, manifest["identity"])
