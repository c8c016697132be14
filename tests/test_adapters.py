"""Architecture adapters, the model registry, and materialise-then-load of the tiny models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fixtures_models import build_tiny, single_thread, tiny_gpt2_lm, tiny_gptj_lm, tiny_llama_lm  # noqa: F401
from kepitfalls.models import tiny
from kepitfalls.models.adapters import (
    ARCHITECTURES,
    GPT2,
    GPTJ,
    LLAMA,
    Architecture,
    architecture_of,
    get_module,
    linear_weight,
    num_layers,
)
from kepitfalls.models.loading import LoadedModel, load_model
from kepitfalls.models.materialize import MANIFEST, materialize
from kepitfalls.models.registry import MODELS, get_spec, identity

TEMPLATE_FIELDS = [f.name for f in dataclasses.fields(Architecture) if f.type in (str, "str") and f.name != "name"]


def _models(gptj: LoadedModel, llama: LoadedModel, gpt2: LoadedModel) -> list[tuple[LoadedModel, Architecture, int]]:
    return [(gptj, GPTJ, 4), (llama, LLAMA, 4), (gpt2, GPT2, 2)]


def test_template_fields_are_the_expected_ones() -> None:
    assert set(TEMPLATE_FIELDS) == {
        "layers", "layer", "mlp", "mlp_in", "mlp_out", "mlp_pre_act", "attn", "embed", "final_norm", "lm_head",
    }
    assert set(ARCHITECTURES) == {"gptj", "gpt2", "llama"}


def test_architecture_of_picks_the_family(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm) -> None:
    for lm, arch, _ in _models(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm):
        assert architecture_of(lm.model) is arch
        assert lm.arch is arch
    assert GPT2.transposed_weights and not GPTJ.transposed_weights and not LLAMA.transposed_weights
    assert not GPT2.embeds_are_residual and GPTJ.embeds_are_residual and LLAMA.embeds_are_residual


def test_architecture_of_unknown_model_type() -> None:
    fake = SimpleNamespace(config=SimpleNamespace(model_type="opt"))
    with pytest.raises(ValueError, match="opt"):
        architecture_of(fake)


def test_every_template_resolves_at_first_and_last_layer(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm) -> None:
    for lm, arch, depth in _models(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm):
        assert num_layers(lm.model) == depth
        for layer in (0, depth - 1):
            for field in TEMPLATE_FIELDS:
                name = getattr(arch, field).format(layer)
                module = get_module(lm.model, name)
                assert isinstance(module, nn.Module), (arch.name, field, name)
        blocks = get_module(lm.model, arch.layers)
        assert isinstance(blocks, nn.ModuleList) and len(blocks) == depth
        assert get_module(lm.model, arch.layer.format(depth - 1)) is blocks[depth - 1]
        assert get_module(lm.model, arch.mlp_out.format(0)) is get_module(lm.model, arch.mlp.format(0)).get_submodule(
            arch.mlp_out.format(0).rsplit(".", 1)[1]
        )
        assert isinstance(get_module(lm.model, arch.embed), nn.Embedding)
        assert get_module(lm.model, arch.lm_head) is lm.model.get_output_embeddings()
        with pytest.raises(KeyError, match="no module"):
            get_module(lm.model, arch.layer.format(depth))


def test_mlp_in_and_out_shapes_agree(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm) -> None:
    """mlp_in maps hidden -> inner and mlp_out inner -> hidden, in (out, in) orientation for every family."""
    for lm, arch, depth in _models(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm):
        hidden = get_module(lm.model, arch.embed).weight.shape[1]
        w_in = linear_weight(lm.model, arch.mlp_in.format(depth - 1))
        w_out = linear_weight(lm.model, arch.mlp_out.format(depth - 1))
        assert w_in.shape[1] == hidden and w_out.shape[0] == hidden
        assert w_out.shape[1] == w_in.shape[0]


def test_linear_weight_is_out_in_view_sharing_storage(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm) -> None:
    for lm, arch, _ in _models(tiny_gptj_lm, tiny_llama_lm, tiny_gpt2_lm):
        name = arch.mlp_out.format(1)
        module = get_module(lm.model, name)
        view = linear_weight(lm.model, name)
        x = torch.randn(3, view.shape[1], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            bias = module.bias if getattr(module, "bias", None) is not None else 0.0
            torch.testing.assert_close(module(x), x @ view.T + bias, rtol=1e-5, atol=1e-5)
        if arch.transposed_weights:
            assert view.shape == module.weight.shape[::-1]
        else:
            assert view.shape == module.weight.shape == (module.out_features, module.in_features)
        assert view.untyped_storage().data_ptr() == module.weight.untyped_storage().data_ptr()
        with torch.no_grad():
            view[0, 1] += 1.0  # a write through the view reaches the parameter
        index = (1, 0) if arch.transposed_weights else (0, 1)
        with torch.no_grad():
            assert module.weight[index] == view[0, 1]


def test_registry_knows_the_models() -> None:
    names = {"smollm2-135m", "gpt-j-6b", "gpt2-xl", "tiny-gptj", "tiny-llama"}
    assert names <= set(MODELS)
    identities = {name: identity(get_spec(name)) for name in names}
    assert len(set(identities.values())) == len(names)
    for name, ident in identities.items():
        assert name in ident
    assert get_spec("smollm2-135m").gguf.gguf_sha256 in identities["smollm2-135m"]
    assert "EleutherAI/gpt-j-6B@main" in identities["gpt-j-6b"]
    assert get_spec("tiny-gptj").source == get_spec("tiny-llama").source == "code"


def test_registry_unknown_name_lists_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        get_spec("gpt-5")
    message = str(info.value)
    assert "gpt-5" in message
    for name in ("smollm2-135m", "gpt-j-6b", "gpt2-xl", "tiny-gptj", "tiny-llama"):
        assert name in message


@pytest.mark.parametrize("name", ["tiny-gptj", "tiny-llama"])
def test_materialize_then_load_reproduces_logits(tmp_path: Path, name: str) -> None:
    out = materialize(name, tmp_path / "models" / name)
    assert out == tmp_path / "models" / name
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest == {"name": name, "identity": identity(get_spec(name)), "dtype": "float32"}
    assert (out / "model.safetensors").is_file()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name != name]  # no staging dir left

    loaded = load_model(out)
    fresh = build_tiny(name)
    assert loaded.name == name and loaded.identity == identity(get_spec(name))
    assert loaded.arch is fresh.arch and not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    text = "The Eiffel Tower is located in Paris, the capital of"
    ids = fresh.tokenizer(text)["input_ids"]
    assert loaded.tokenizer(text)["input_ids"] == ids
    assert loaded.tokenizer.pad_token_id == fresh.tokenizer.pad_token_id
    batch = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(loaded.model(batch).logits, fresh.model(batch).logits)


def test_materialize_replaces_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "tiny-gptj"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    materialize("tiny-gptj", out)
    assert not (out / "stale.txt").exists() and (out / MANIFEST).is_file()


def test_tiny_models_are_deterministic() -> None:
    a, _ = tiny.tiny_gptj()
    b, _ = tiny.tiny_gptj()
    c, _ = tiny.tiny_gptj(seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
