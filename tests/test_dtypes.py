"""Every editing method on float16 and bfloat16 weights: the edit is computed in float32, stored in float32
and applied in the weight's dtype, and it moves the new target as the float32 edit does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures_models import TINY_NAMES, build_tiny, changed_tensors, single_thread, snapshot  # noqa: F401
from kepitfalls.deltas.codecs import DenseDelta, LowRankDelta
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.methods.KN import KNHparams, KnowledgeNeurons
from kepitfalls.methods.MEMIT import MEMIT, MEMITHparams
from kepitfalls.methods.ROME import ROME, ROMEHparams
from kepitfalls.methods.base import Artifacts, EditMethod
from kepitfalls.models.adapters import linear_weight
from kepitfalls.models.loading import LoadedModel, load_model
from kepitfalls.models.materialize import MANIFEST, materialize
from kepitfalls.models.registry import DTYPES, get_spec, identity, resolve_spec
from kepitfalls.prepare.stats import save_stats, second_moments, stats_file
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.primitives import teacher_forced

HALF_DTYPES = ("float16", "bfloat16")
# The subject ends the prompt, so ROME's v* and MEMIT's z* act on the position that predicts the target: in a
# random model, changes at earlier positions barely reach the last one through near-uniform attention.
REQUEST = EditRequest("The capital city of {}", "France", "Rome, Italy", "Paris")
TEMPLATES = ["{}", "The cat sat. {}", "Question: who wrote Hamlet? Answer: William. {}"]
VALUE = dict(v_num_grad_steps=10, v_lr=0.5, v_loss_layer=-1, v_weight_decay=0.5, clamp_norm_factor=4, kl_factor=0.0625, compute_dtype="float32")
FT = dict(layers=[2], num_steps=5, lr=1e-2, weight_decay=0.0, norm_constraint=None)
STATS_LAYERS = (1, 2)
CASES = {
    "ROME": lambda: ROME(ROMEHparams(**VALUE, layer=1, mom2_adjustment=False)),
    "ROME-mom2": lambda: ROME(ROMEHparams(**VALUE, layer=1, mom2_adjustment=True)),
    "MEMIT": lambda: MEMIT(MEMITHparams(**VALUE, layers=[1, 2], mom2_adjustment=True, mom2_update_weight=50.0)),
    "FT-L": lambda: FineTune(FTHparams(**FT, objective="prompt_last")),
    "FT-M": lambda: FineTune(FTHparams(**FT, objective="target_new")),
    "KN": lambda: KnowledgeNeurons(KNHparams(steps=8, batch_size=4, adaptive_threshold=0.2, p=0.4, refine=False,
                                             lr_scale=1.0, max_neurons=None, variant="easyedit")),
}


def sharp_tiny(name: str, dtype: str | None = None) -> LoadedModel:
    """A tiny model whose LM head is scaled by 16 (exact in every dtype: a power of two).

    Random weights (std 0.02) give near-flat logits that no edit moves by more than hundredths of a nat,
    too little to compare; with the sharper head the float32 edits move the target by 0.06-10 nats.
    """
    lm = build_tiny(name, dtype=dtype)
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(16)
    return lm


def target_logprob(lm: LoadedModel) -> float:
    """Mean log-probability of the new target's tokens after the prompt, read in float32."""
    (scored,) = teacher_forced(lm.model, lm.tokenizer, [REQUEST.rewrite_prompt], [REQUEST.target_new])
    return -scored.mean_nll


def method_for(case: str, lm: LoadedModel, artifacts_dir: Path) -> EditMethod:
    """The case's method with templates and statistics of `lm` itself (as the stats stage would compute them)."""
    templates = artifacts_dir / "templates.json"
    templates.write_text(json.dumps({"groups": [TEMPLATES[:1], TEMPLATES[1:]]}), encoding="utf-8")
    corpus = torch.randint(2, len(lm.tokenizer), (8, 32), generator=torch.Generator().manual_seed(0))
    modules = [lm.arch.mlp_out.format(layer) for layer in STATS_LAYERS]
    moments, count = second_moments(lm, modules, corpus, batch_size=8)
    for layer, module in zip(STATS_LAYERS, modules):
        save_stats(stats_file(artifacts_dir, layer), moments[module].float(), count, {"corpus": "random-ids"})
    method = CASES[case]()
    method.artifacts = Artifacts(templates_file=templates, stats_dir=artifacts_dir)
    return method


def edit_effect(lm: LoadedModel, method: EditMethod) -> tuple[float, LowRankDelta | DenseDelta]:
    """(post − pre log-probability of the new target, the delta); the model is restored afterwards."""
    pre = target_logprob(lm)
    delta = method.edit(lm, [REQUEST])
    delta.apply(lm.model)
    try:
        return target_logprob(lm) - pre, delta
    finally:
        delta.revert(lm.model)


_FLOAT32_EFFECTS: dict[tuple[str, str], float] = {}


def float32_effect(name: str, case: str, tmp_path: Path) -> float:
    """The float32 model's edit effect, computed once per model and case."""
    if (name, case) not in _FLOAT32_EFFECTS:
        lm = sharp_tiny(name)
        folder = tmp_path / "float32"
        folder.mkdir()
        _FLOAT32_EFFECTS[(name, case)] = edit_effect(lm, method_for(case, lm, folder))[0]
    return _FLOAT32_EFFECTS[(name, case)]


# |effect(half) − effect(float32)| ≤ rtol·|effect(float32)| + atol, in nats. Measured on these models: at
# most 0.032 nats = 2.4% in float16 (MEMIT on GPT-J) and 17% in bfloat16 (MEMIT on Llama; ROME with C⁻¹ and
# MEMIT on GPT-J 14-16%); the tolerances are 2-3x that. bfloat16 keeps 8 significant bits to float16's 11,
# so the weights, the keys and the statistics the edit is computed from differ more from float32's.
TOLERANCE = {"float16": (0.05, 0.02), "bfloat16": (0.3, 0.05)}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", TINY_NAMES)
def test_half_precision_edit(name: str, dtype: str, case: str, tmp_path: Path) -> None:
    lm = sharp_tiny(name, dtype=dtype)
    before = snapshot(lm.model)
    method = method_for(case, lm, tmp_path)
    effect, delta = edit_effect(lm, method)
    assert changed_tensors(lm.model, before) == set()  # edit, apply and revert restore every bit

    tensors, _ = delta.state()
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float32}
    delta.apply(lm.model)
    assert changed_tensors(lm.model, before)
    assert all(bool(p.isfinite().all()) for p in lm.model.parameters())
    assert all(p.dtype == getattr(torch, dtype) for p in lm.model.parameters())
    delta.revert(lm.model)
    assert changed_tensors(lm.model, before) == set()

    reference = float32_effect(name, case, tmp_path)
    assert abs(reference) > 0.05  # the float32 edit moves the target: something to compare with
    if case == "KN" and dtype == "bfloat16":
        return  # bfloat16's 8-bit mantissa changes which neurons pass KN's threshold: a discrete, not a rounding, change
    rtol, atol = TOLERANCE[dtype]
    assert abs(effect - reference) <= rtol * abs(reference) + atol, (effect, reference)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_low_rank_delta_rounds_once_into_the_weight(dtype: str) -> None:
    """W ← round(W + U Vᵀ): the float32 change is added in float32 and the sum rounded to the weight's dtype
    once, never rounded to the weight's dtype first (which would lose what a double rounding loses)."""
    lm = build_tiny("tiny-gptj", dtype=dtype)
    module = lm.arch.mlp_out.format(1)
    weight = linear_weight(lm.model, module)
    original = weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    u, v = torch.randn(weight.shape[0], 2, generator=generator), torch.randn(weight.shape[1], 2, generator=generator) * 1e-3
    delta = LowRankDelta({module: (u, v)})
    delta.apply(lm.model)
    expected = (original.float() + u @ v.T).to(weight.dtype)
    assert torch.equal(weight, expected)
    assert not torch.equal(expected, original + (u @ v.T).to(weight.dtype))  # the two roundings do differ here
    delta.revert(lm.model)
    assert torch.equal(weight, original)


# ------------------------------------------------------------------------------------------ model dtype


def test_papers_models_default_to_float32_from_the_main_weights() -> None:
    assert get_spec("gpt-j-6b").dtype == get_spec("gpt2-xl").dtype == "float32"
    assert "EleutherAI/gpt-j-6B@main|float32" in identity(get_spec("gpt-j-6b"))


def test_model_dtype_overrides_the_spec_and_the_identity() -> None:
    assert resolve_spec("gpt-j-6b") == get_spec("gpt-j-6b")
    identities = {dtype: identity(resolve_spec("gpt-j-6b", dtype)) for dtype in DTYPES}
    assert len(set(identities.values())) == len(DTYPES)
    assert all(identities[dtype].endswith(f"|{dtype}") for dtype in DTYPES)
    with pytest.raises(ValueError, match="model_dtype.*'half'"):
        resolve_spec("gpt-j-6b", "half")


def test_materialize_in_a_model_dtype(tmp_path: Path) -> None:
    out = materialize("tiny-llama", tmp_path / "tiny-llama", model_dtype="bfloat16")
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["dtype"] == "bfloat16" and manifest["identity"] == identity(resolve_spec("tiny-llama", "bfloat16"))
    loaded = load_model(out, model_dtype="bfloat16")
    assert loaded.identity == manifest["identity"]
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    fresh = build_tiny("tiny-llama", dtype="bfloat16")
    assert all(torch.equal(p, fresh.model.state_dict()[n]) for n, p in loaded.model.state_dict().items())
    with pytest.raises(ValueError, match="model_dtype asks for float32"):
        load_model(out)
