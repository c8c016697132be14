"""MEMIT and KN on tiny random models: the maths of the updates, what they touch, and bit-exact restores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from kepitfalls.deltas.codecs import DenseDelta, LowRankDelta
from kepitfalls.deltas.composed import decode
from kepitfalls.methods.base import Artifacts
from kepitfalls.requests import EditRequest
from kepitfalls.methods.KN import (
    KNHparams,
    KnowledgeNeurons,
    Site,
    attribution_scores,
    replace_at,
    select_neurons,
)
from kepitfalls.hidden.hooks import subject_reprs
from kepitfalls.hidden.value import optimise_output
from kepitfalls.methods.MEMIT import MEMIT, MEMITHparams, layer_update, request_keys
from kepitfalls.models.loading import LoadedModel, wrap
from kepitfalls.models.tiny import tiny_gptj, tiny_llama, tiny_tokenizer
from kepitfalls.prepare.stats import save_stats, second_moments, stats_file
from kepitfalls.tokens import Batch, prompt_ids, target_ids

torch.set_num_threads(1)

REQUESTS = [
    EditRequest("{} is located in", "The Eiffel Tower", "Rome", "Paris"),
    EditRequest("{} was founded in", "Toyota", "Germany", "Japan"),
]
TEMPLATES = {"groups": [["{}"], ["The cat sat. {}"], ["Apple is red. {}", "Question: who wrote it? {}"]]}
MEMIT_HP = MEMITHparams(layers=[1, 2], v_num_grad_steps=4, v_lr=0.5, v_loss_layer=-1, v_weight_decay=0.5,
                        clamp_norm_factor=0.75, kl_factor=0.0625, compute_dtype="float32", mom2_adjustment=False, mom2_update_weight=50.0)
KN_HP = KNHparams(steps=8, batch_size=3, adaptive_threshold=0.2, p=0.4, refine=False, lr_scale=1.0, max_neurons=None,
                  variant="dai")


def tiny_gpt2(seed: int = 0):
    """A GPT-2 (transposed Conv1D weights, position embeddings: no residual restart)."""
    tok = tiny_tokenizer(add_bos=False)
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=4, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval(), tok


BUILDERS = {"gptj": tiny_gptj, "llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.fixture(scope="module", params=list(BUILDERS))
def lm(request) -> LoadedModel:
    model, tok = BUILDERS[request.param]()
    return wrap(f"tiny-{request.param}", model, tok, f"tiny-{request.param}")


@pytest.fixture
def templates_file(tmp_path: Path) -> Path:
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(TEMPLATES), encoding="utf-8")
    return path


def snapshot(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in lm.model.named_parameters()}


def changed(lm: LoadedModel, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, p in lm.model.named_parameters() if not torch.equal(p, before[name])}


def assert_identical(lm: LoadedModel, before: dict[str, torch.Tensor]) -> None:
    assert changed(lm, before) == set()


# ---------------------------------------------------------------- MEMIT


def test_template_groups_are_read_as_stored(templates_file: Path) -> None:
    artifacts = Artifacts(templates_file=templates_file)
    assert artifacts.template_groups == [["{}"], ["The cat sat. {}"], ["Apple is red. {}", "Question: who wrote it? {}"]]
    assert artifacts.context_templates == ["{}", "The cat sat. {}", "Apple is red. {}", "Question: who wrote it? {}"]
    assert Artifacts().template_groups == [["{}"]]


def test_memit_touches_exactly_its_layers_and_restores(lm: LoadedModel, templates_file: Path) -> None:
    method = MEMIT(MEMIT_HP, Artifacts(templates_file=templates_file))
    before = snapshot(lm)
    delta = method.edit(lm, REQUESTS[:1])
    assert_identical(lm, before)  # edit leaves the model as it found it
    modules = [lm.arch.mlp_out.format(layer) for layer in MEMIT_HP.layers]
    assert isinstance(delta, LowRankDelta) and list(delta.factors) == modules
    delta.apply(lm.model)
    assert changed(lm, before) == {f"{m}.weight" for m in modules}
    norms = [float((u @ v.T).norm()) for u, v in delta.factors.values()]
    assert all(n > 0 for n in norms)
    delta.revert(lm.model)
    assert_identical(lm, before)
    tensors, meta = delta.state()
    again = decode(delta.kind, tensors, meta)
    again.apply(lm.model)
    again.revert(lm.model)
    assert_identical(lm, before)


def test_memit_joint_update_solves_the_least_squares_problem(tmp_path: Path, templates_file: Path) -> None:
    model, tok = tiny_gptj(seed=1)
    lm = wrap("tiny-gptj", model, tok, "tiny-gptj")
    layers = MEMIT_HP.layers
    corpus = torch.randint(0, len(tok), (16, 40), generator=torch.Generator().manual_seed(0))
    moments, count = second_moments(lm, [lm.arch.mlp_out.format(layer) for layer in layers], corpus, batch_size=8)
    for layer in layers:
        save_stats(stats_file(tmp_path, layer), moments[lm.arch.mlp_out.format(layer)].float(), count, {"corpus": "random"})
    hp = MEMIT_HP.model_copy(update={"mom2_adjustment": True, "mom2_update_weight": 30.0})
    artifacts = Artifacts(templates_file=templates_file, stats_dir=tmp_path)
    method = MEMIT(hp, artifacts)
    assert method.upstream_files() == [templates_file] + [stats_file(tmp_path, layer) for layer in layers]
    before = snapshot(lm)
    delta = method.edit(lm, REQUESTS)
    assert_identical(lm, before)

    z_module = lm.arch.layer.format(layers[-1])
    templates = artifacts.context_templates
    z_star = torch.stack([optimise_output(lm, z_module, layers[-1], r, hp, templates) for r in REQUESTS], dim=1)
    groups = artifacts.template_groups
    applied = []
    for i, layer in enumerate(layers):
        module = lm.arch.mlp_out.format(layer)
        u, v = delta.factors[module]
        update = u.double() @ v.double().T
        assert torch.linalg.matrix_rank(update).item() == len(REQUESTS)
        keys = request_keys(lm, module, REQUESTS, groups).double()
        current = subject_reprs(lm, z_module, [r.prompt for r in REQUESTS], [r.subject for r in REQUESTS], output=True).T
        residual = ((z_star - current) / (len(layers) - i)).double()
        torch.testing.assert_close(u.double(), residual, rtol=1e-5, atol=1e-6)
        mom2 = load_file(str(stats_file(tmp_path, layer)))["mom2"].double()
        lhs = update @ (hp.mom2_update_weight * mom2 + keys @ keys.T)
        rhs = residual @ keys.T
        assert ((lhs - rhs).norm() / rhs.norm()).item() < 1e-4
        part = LowRankDelta({module: (u, v)})
        part.apply(lm.model)
        applied.append(part)
    for part in reversed(applied):
        part.revert(lm.model)
    assert_identical(lm, before)


def test_memit_without_mom2_uses_the_identity() -> None:
    keys, residuals = torch.randn(12, 3), torch.randn(5, 3)
    u, v = layer_update(keys, residuals, None, 7.0)
    u2, v2 = layer_update(keys, residuals, torch.eye(12), 7.0)
    torch.testing.assert_close(u @ v.T, u2 @ v2.T)
    expected = residuals.double() @ keys.double().T @ torch.linalg.inv(7.0 * torch.eye(12, dtype=torch.float64) + keys.double() @ keys.double().T)
    torch.testing.assert_close((u @ v.T).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers", [[2, 1], [1, 1]])
def test_memit_rejects_unordered_layers(layers: list[int]) -> None:
    with pytest.raises(ValueError, match="distinct and ascending"):  # the schema's check, before any model loads
        MEMITHparams(**{**MEMIT_HP.model_dump(), "layers": layers})


# ---------------------------------------------------------------- KN


def test_integrated_gradients_are_complete(lm: LoadedModel) -> None:
    """Σ_i IG_i = P(a) − P(0) per layer (the completeness axiom), up to the Riemann-sum error."""
    ids = prompt_ids(lm.tokenizer, "The Eiffel Tower is located in")
    token = target_ids(lm.tokenizer, "Paris")[0]
    scores = attribution_scores(lm, ids, [token], steps=300, batch_size=128, site=Site.of(lm.arch, "dai"))
    batch = Batch.from_ids([ids], lm.tokenizer.pad_token_id, lm.model.device)
    with torch.no_grad():
        full = torch.softmax(lm.model(input_ids=batch.input_ids).logits[0, -1].float(), -1)[token]
        for layer in range(scores.shape[0]):
            with replace_at(lm.model, lm.arch.mlp_out.format(layer), False, len(ids) - 1, torch.zeros(1, scores.shape[1])):
                zeroed = torch.softmax(lm.model(input_ids=batch.input_ids).logits[0, -1].float(), -1)[token]
            difference = (full - zeroed).item()
            assert abs(scores[layer].sum().item() - difference) <= 0.02 * abs(difference) + 1e-7


@pytest.mark.parametrize("name", ["gptj", "llama"])
def test_last_token_attribution_equals_whole_prompt_passes(name: str) -> None:
    """The cached-prefix, one-token passes give the scores of re-running the whole prompt."""
    model, tok = BUILDERS[name]()
    lm = wrap(f"tiny-{name}", model, tok, f"tiny-{name}")
    ids = prompt_ids(lm.tokenizer, "The Eiffel Tower is located in the city of")
    token = target_ids(lm.tokenizer, "Paris")[0]
    site = Site.of(lm.arch, "dai")
    fast = attribution_scores(lm, ids, [token], steps=6, batch_size=4, site=site)
    slow = attribution_scores(lm, ids, [token], steps=6, batch_size=4, site=site, fast=False)
    scale = float(slow.abs().max())
    assert scale > 0
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6 * scale)


def test_select_neurons_thresholds_and_refines() -> None:
    a = torch.tensor([[1.0, 0.5, 0.05], [0.0, 0.2, -1.0]])
    b = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert select_neurons([a], 0.1, 0.4, False, None) == [(0, 0), (0, 1), (1, 1)]
    assert select_neurons([a, b, c], 0.1, 0.4, False, None) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert select_neurons([a, b, c], 0.1, 0.4, True, None) == [(0, 0)]  # count > 0.4 * 3
    assert select_neurons([a], 0.1, 0.4, False, 2) == [(0, 0), (0, 1)]


def test_kn_changes_only_the_selected_slices(lm: LoadedModel, templates_file: Path) -> None:
    request = REQUESTS[0]
    method = KnowledgeNeurons(KN_HP, Artifacts(templates_file=templates_file))
    before = snapshot(lm)
    delta = method.edit(lm, [request])
    assert_identical(lm, before)
    assert isinstance(delta, DenseDelta) and delta.changes

    ids = prompt_ids(lm.tokenizer, request.rewrite_prompt)
    with torch.no_grad():
        predicted = int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    embeddings = lm.model.get_input_embeddings().weight
    direction = embeddings[target_ids(lm.tokenizer, request.target_new)[0]] - embeddings[predicted]
    selected = set(method.neurons(lm, request, [target_ids(lm.tokenizer, request.target_true)[0]]))
    stored = set()
    dim = 0 if lm.arch.transposed_weights else 1
    for name, change in delta.changes.items():
        layer = next(l for l in range(4) if name == f"{lm.arch.mlp_out.format(l)}.weight")
        index_dim, index = delta.indices[name]
        assert index_dim == dim and change.shape[dim] == len(index)
        assert change.shape[1 - dim] == lm.model.config.hidden_size  # only the neuron slices are stored
        stored |= {(layer, int(i)) for i in index}
        for k in range(len(index)):
            torch.testing.assert_close(change.select(dim, k), direction)
    assert stored == selected

    delta.apply(lm.model)
    params = dict(lm.model.named_parameters())
    assert changed(lm, before) == set(delta.changes)
    for name, (d, index) in delta.indices.items():
        mask = torch.zeros(params[name].shape[d], dtype=torch.bool)
        mask[index] = True
        untouched = params[name].index_select(d, torch.nonzero(~mask).squeeze(1))
        assert torch.equal(untouched, before[name].index_select(d, torch.nonzero(~mask).squeeze(1)))
        assert not torch.equal(params[name].index_select(d, index), before[name].index_select(d, index))
    delta.revert(lm.model)
    assert_identical(lm, before)
    again = decode(delta.kind, *delta.state())
    again.apply(lm.model)
    again.revert(lm.model)
    assert_identical(lm, before)


def test_kn_refine_uses_the_templated_prompts(templates_file: Path) -> None:
    method = KnowledgeNeurons(KN_HP.model_copy(update={"refine": True}), Artifacts(templates_file=templates_file))
    prompts = method.prompts(REQUESTS[0])
    assert prompts[0] == "The Eiffel Tower is located in"
    assert prompts[1:] == [t.format(prompts[0]) for group in TEMPLATES["groups"][1:] for t in group]
    assert KnowledgeNeurons(KN_HP, Artifacts(templates_file=templates_file)).prompts(REQUESTS[0]) == prompts[:1]
