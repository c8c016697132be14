"""Shared fixtures for the model, scoring, delta and method tests: tiny models built in code, no download.

Import the fixtures explicitly (`from fixtures_models import single_thread, tiny_lm, ...`); importing
`single_thread` into a test module makes it autouse there.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from kepitfalls.models import tiny
from kepitfalls.models.loading import LoadedModel, wrap
from kepitfalls.models.registry import identity, resolve_spec

TINY_NAMES = ("tiny-gptj", "tiny-llama")


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One CPU thread: fast on small tensors and the same floating-point reduction order on every run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_tiny(name: str, seed: int = 0, dtype: str | None = None) -> LoadedModel:
    """A fresh tiny model (random weights, cast to `dtype` if given), wrapped as the pipeline wraps a loaded one."""
    builder = {"tiny-gptj": tiny.tiny_gptj, "tiny-llama": tiny.tiny_llama}[name]
    model, tokenizer = builder(seed=seed)
    spec = resolve_spec(name, dtype)
    return wrap(name, model.to(getattr(torch, spec.dtype)), tokenizer, identity(spec))


def build_tiny_gpt2(seed: int = 0) -> LoadedModel:
    """A 2-layer GPT-2 (Conv1D weights stored as (in, out)) on the tiny byte-level tokenizer."""
    tokenizer = tiny.tiny_tokenizer(add_bos=False)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
    )
    torch.manual_seed(seed)
    return wrap("tiny-gpt2", GPT2LMHeadModel(config).eval(), tokenizer, "tiny-gpt2|test|float32")


@pytest.fixture
def tiny_gptj_lm() -> LoadedModel:
    return build_tiny("tiny-gptj")


@pytest.fixture
def tiny_llama_lm() -> LoadedModel:
    return build_tiny("tiny-llama")


@pytest.fixture(params=TINY_NAMES)
def tiny_lm(request: pytest.FixtureRequest) -> LoadedModel:
    """Each tiny model in turn: GPT-J (no BOS) and Llama (adds BOS)."""
    return build_tiny(request.param)


@pytest.fixture
def tiny_gpt2_lm() -> LoadedModel:
    return build_tiny_gpt2()


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer, for bit-exact comparisons."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed_tensors(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    """Names of the state tensors that are no longer bit-identical to `before`."""
    now = model.state_dict()
    assert set(now) == set(before)
    return {name for name, tensor in now.items() if not torch.equal(tensor, before[name])}


def build_deltas(lm: LoadedModel, cases: list, method) -> dict:
    """Every case's delta computed as editing.edit_suite does: in order, with its base chain applied."""
    from kepitfalls.suites.common import applied, chain

    by_id = {case.case_id: case for case in cases}
    deltas: dict = {}
    for case_id, case in by_id.items():
        with applied(lm, deltas, chain(by_id, case_id)[:-1]):
            deltas[case_id] = method.edit(lm, list(case.requests))
    return deltas
