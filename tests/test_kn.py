"""KN's variants on tiny models: which activation each attributes, EasyEdit's token handling and edit
vector, the sign-aware flip, the fast path at the new attribution point, and float16."""

from __future__ import annotations

import pytest
import torch

from fixtures_models import build_tiny, build_tiny_gpt2, single_thread, snapshot  # noqa: F401
from kepitfalls.deltas.codecs import DenseDelta
from kepitfalls.requests import EditRequest
import pydantic

from kepitfalls.hidden.hooks import capture_many
from kepitfalls.methods.KN import VARIANTS, KNHparams, KnowledgeNeurons, Site, attribution_scores, describe
from kepitfalls.models.adapters import num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch, prompt_ids, target_ids

REQUEST = EditRequest("{} is located in", "The Eiffel Tower", "Rome", "Paris")
HP = dict(steps=6, batch_size=4, adaptive_threshold=0.2, p=0.4, refine=False, lr_scale=1.0, max_neurons=None)
#: The activation each variant must attribute, spelled out by hand: (module template, its output?).
EXPECTED_SITE = {
    ("gptj", "easyedit"): ("transformer.h.{}.mlp.fc_in", True),
    ("gpt2", "easyedit"): ("transformer.h.{}.mlp.c_fc", True),
    ("llama", "easyedit"): ("model.layers.{}.mlp.gate_proj", True),
    ("gptj", "dai"): ("transformer.h.{}.mlp.fc_out", False),
    ("gpt2", "dai"): ("transformer.h.{}.mlp.c_proj", False),
    ("llama", "dai"): ("model.layers.{}.mlp.down_proj", False),
}
MODELS = {"gptj": lambda: build_tiny("tiny-gptj"), "llama": lambda: build_tiny("tiny-llama"), "gpt2": build_tiny_gpt2}


def method(variant: str, **overrides) -> KnowledgeNeurons:
    return KnowledgeNeurons(KNHparams(**{**HP, "variant": variant, **overrides}))


def nonlinear(lm: LoadedModel) -> LoadedModel:
    """Scale the first projections up: at random init their outputs are so small that GELU/SiLU act as
    x/2, where IG of the pre- and post-activation neurons coincide and the sites cannot be told apart."""
    with torch.no_grad():
        for layer in range(num_layers(lm.model)):
            lm.model.get_submodule(lm.arch.mlp_pre_act.format(layer)).weight.mul_(30.0)
    return lm


def reference_ig(lm: LoadedModel, ids: list[int], token: int, module: str, output: bool, steps: int) -> torch.Tensor:
    """IG by brute force: one full forward per scaled copy, a hand-written hook on the named activation."""
    x = torch.tensor([ids])
    position = len(ids) - 1
    rows = []
    for layer in range(num_layers(lm.model)):
        target = lm.model.get_submodule(module.format(layer))
        seen: dict[str, torch.Tensor] = {}

        def swap(tensor: torch.Tensor) -> torch.Tensor:
            if "value" not in seen:
                seen["base"] = tensor[0, position].detach().clone()
                return tensor
            tensor = tensor.clone()
            tensor[0, position] = seen["value"]
            return tensor

        if output:
            handle = target.register_forward_hook(lambda _m, _a, out: swap(out))
        else:
            handle = target.register_forward_pre_hook(lambda _m, args: (swap(args[0]),))
        try:
            with torch.no_grad():
                lm.model(input_ids=x)
            total = torch.zeros_like(seen["base"])
            for alpha in torch.linspace(0, 1, steps):
                seen["value"] = (alpha * seen["base"]).requires_grad_(True)
                prob = torch.softmax(lm.model(input_ids=x).logits[0, -1], -1)[token]
                total += torch.autograd.grad(prob, seen["value"])[0]
        finally:
            handle.remove()
        rows.append(seen["base"] * total / steps)
    return torch.stack(rows)


def greedy(lm: LoadedModel, prompt: str, steps: int) -> list[tuple[list[int], int]]:
    """The prompt grown by decoded argmax tokens and re-encoded as text, with each step's argmax token."""
    out = []
    for _ in range(steps):
        ids = lm.tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            token = int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        out.append((ids, token))
        prompt += lm.tokenizer.decode([token])
    return out


def stored_vectors(lm: LoadedModel, delta: DenseDelta) -> dict[tuple[int, int], torch.Tensor]:
    """(layer, neuron) -> the change stored for that neuron's value vector."""
    vectors = {}
    for layer in range(num_layers(lm.model)):
        name = f"{lm.arch.mlp_out.format(layer)}.weight"
        if name in delta.changes:
            dim, index = delta.indices[name]
            for k, neuron in enumerate(index.tolist()):
                vectors[(layer, neuron)] = delta.changes[name].select(dim, k)
    return vectors


def test_variant_is_validated_and_described() -> None:
    for bad in ({**HP, "variant": "rome"}, HP):
        with pytest.raises(pydantic.ValidationError, match="variant"):
            KNHparams(**bad)
    sentences = {describe(KNHparams(**HP, variant=v)) for v in VARIANTS}
    assert len(sentences) == 3 and all(s.endswith(".") for s in sentences)
    assert "EasyEdit" in describe(KNHparams(**HP, variant="easyedit"))
    assert "sign" in describe(KNHparams(**HP, variant="dai_sign_aware"))


@pytest.mark.parametrize("family,variant", sorted(EXPECTED_SITE))
def test_each_variant_attributes_its_activation(family: str, variant: str) -> None:
    """Scores equal brute-force IG on the hand-named activation (fails if easyedit attributed mlp_out's input)."""
    lm = nonlinear(MODELS[family]())
    ids = prompt_ids(lm.tokenizer, REQUEST.rewrite_prompt)
    token = target_ids(lm.tokenizer, "Paris")[0]
    module, output = EXPECTED_SITE[(family, variant)]
    got = attribution_scores(lm, ids, [token], steps=4, batch_size=3, site=Site.of(lm.arch, variant))
    want = reference_ig(lm, ids, token, module, output, steps=4)
    other_module, other_output = EXPECTED_SITE[(family, "dai" if variant == "easyedit" else "easyedit")]
    other = reference_ig(lm, ids, token, other_module, other_output, steps=4)
    scale = float(want.abs().max())
    assert scale > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    assert (got - other).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("family", ["gptj", "llama"])
def test_easyedit_scores_average_every_target_token(family: str) -> None:
    """Mean over the encode(ground_truth) tokens; Llama re-encodes a greedy continuation, GPT-J keeps the prompt."""
    lm = MODELS[family]()
    truth = lm.tokenizer("Paris")["input_ids"]
    assert len(truth) >= 3
    assert (truth[0] == lm.tokenizer.bos_token_id) == (family == "llama")  # the BOS quirk is attributed too
    prompt = REQUEST.rewrite_prompt
    if family == "llama":
        contexts = [ids for ids, _ in greedy(lm, prompt, len(truth))]
        assert len({tuple(ids) for ids in contexts}) == len(truth)
    else:
        contexts = [lm.tokenizer(prompt)["input_ids"]] * len(truth)
    site = Site.of(lm.arch, "easyedit")
    want = sum(attribution_scores(lm, ids, [t], 6, 4, site) for ids, t in zip(contexts, truth)) / len(truth)
    got = method("easyedit").scores(lm, prompt, truth)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("family,target,one_token", [("gptj", "Apple", True), ("gptj", "Rome", False), ("llama", "Apple", False)])
def test_easyedit_edit_vector(family: str, target: str, one_token: bool) -> None:
    """E[new] − 2·E[pred] for a one-token target; Σ E[new_j] − Σ E[greedy_j] otherwise (Llama's BOS included)."""
    lm = MODELS[family]()
    request = EditRequest(REQUEST.prompt, REQUEST.subject, target, REQUEST.target_true)
    new = lm.tokenizer(target)["input_ids"]
    assert (len(new) == 1) == one_token
    embeddings = lm.model.get_input_embeddings().weight
    predicted = [token for _, token in greedy(lm, request.rewrite_prompt, len(new))]
    if one_token:
        want = embeddings[new[0]] - 2 * embeddings[predicted[0]]
    else:
        want = embeddings[new].sum(0) - embeddings[predicted].sum(0)
    kn = method("easyedit")
    delta = kn.edit(lm, [request])
    vectors = stored_vectors(lm, delta)
    assert set(vectors) == set(kn.neurons(lm, request, lm.tokenizer(REQUEST.target_true)["input_ids"])) != set()
    for vector in vectors.values():
        assert vector.dtype == torch.float32
        torch.testing.assert_close(vector, want)


@pytest.mark.parametrize("family", ["gptj", "llama"])
def test_sign_aware_flips_the_change_of_negative_neurons(family: str) -> None:
    lm = MODELS[family]()
    ids = prompt_ids(lm.tokenizer, REQUEST.rewrite_prompt)
    modules = [lm.arch.mlp_out.format(layer) for layer in range(num_layers(lm.model))]
    inputs = capture_many(lm, modules, Batch.from_ids([ids], lm.tokenizer.pad_token_id, lm.model.device))
    plain = stored_vectors(lm, method("dai").edit(lm, [REQUEST]))
    aware = stored_vectors(lm, method("dai_sign_aware").edit(lm, [REQUEST]))
    assert set(plain) == set(aware)
    negative = 0
    for (layer, neuron), vector in plain.items():
        activation = inputs[modules[layer]][0][0, -1, neuron]
        negative += int(activation < 0)
        torch.testing.assert_close(aware[(layer, neuron)], -vector if activation < 0 else vector, rtol=0, atol=0)
    assert 0 < negative < len(plain)


@pytest.mark.parametrize("family", ["gptj", "llama"])
def test_last_token_path_equals_whole_prompt_at_the_first_projection(family: str) -> None:
    lm = MODELS[family]()
    ids = prompt_ids(lm.tokenizer, "The Eiffel Tower is located in the city of")
    site = Site.of(lm.arch, "easyedit")
    tokens = lm.tokenizer("Paris")["input_ids"]
    fast = attribution_scores(lm, ids, tokens, steps=6, batch_size=4, site=site)
    slow = attribution_scores(lm, ids, tokens, steps=6, batch_size=4, site=site, fast=False)
    scale = float(slow.abs().max())
    assert scale > 0
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", ["gptj", "llama"])
def test_every_variant_edits_a_float16_model(family: str, variant: str) -> None:
    lm = MODELS[family]()
    lm.model.half()
    before = snapshot(lm.model)
    delta = method(variant).edit(lm, [REQUEST])
    assert all(torch.equal(t, before[n]) for n, t in lm.model.state_dict().items())
    assert delta.changes and all(c.dtype == torch.float32 and c.isfinite().all() for c in delta.changes.values())
    delta.apply(lm.model)
    try:
        for name in delta.changes:
            weight = lm.model.get_parameter(name)
            assert weight.dtype == torch.float16 and weight.isfinite().all() and not torch.equal(weight, before[name])
    finally:
        delta.revert(lm.model)
