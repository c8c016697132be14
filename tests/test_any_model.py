"""Any Hugging Face causal LM by hub id or local directory: its key, its params, its materialised copy."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from transformers import OPTConfig

from fixtures_models import single_thread  # noqa: F401  (autouse: one torch thread)
from kepitfalls.models import tiny
from kepitfalls.models.loading import load_model
from kepitfalls.models.materialize import MANIFEST, UnsupportedArchitectureError, materialize
from kepitfalls.models.registry import get_spec, model_key
from kepitfalls.params import PROJECT_ROOT, load_params

RAW = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("model", "key"),
    [("smollm2-135m", "smollm2-135m"), ("EleutherAI/gpt-j-6b", "EleutherAI/gpt-j-6b"), ("./my-llama", "my-llama"),
     ("/data/models/my-llama/", "my-llama")],
)
def test_model_key(model: str, key: str) -> None:
    assert model_key(model) == key


@pytest.mark.parametrize("model", ["gpt-5", "./smollm2-135m", "a/b/c"])
def test_model_key_refuses_what_is_no_model(model: str) -> None:
    with pytest.raises(KeyError, match=repr(model)):
        model_key(model)


def test_params_accept_a_hub_id_keyed_by_its_id(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["model"] = "EleutherAI/gpt-j-6b"
    for method in raw["report"]["methods"]:
        raw["methods"][method]["EleutherAI/gpt-j-6b"] = raw["methods"][method]["gpt-j-6b"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    params = load_params(tmp_path / "params.yaml")
    assert params.hparams("ROME") == params.methods.ROME["gpt-j-6b"]
    assert get_spec(params.model).hub_id == "EleutherAI/gpt-j-6b"


def test_a_local_directory_materialises_and_loads(tmp_path: Path) -> None:
    model, tokenizer = tiny.tiny_llama()
    source = tmp_path / "my-llama"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = materialize(str(source), tmp_path / "models" / "my-llama")
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["name"] == "my-llama" and manifest["path"] == str(source)
    assert manifest["identity"].startswith("my-llama|local-sha256=")
    lm = load_model(out)
    assert lm.arch.name == "llama" and lm.identity == manifest["identity"]

    (source / "config.json").write_text((source / "config.json").read_text().replace("\n", "\n "))  # any byte
    again = materialize(str(source), tmp_path / "models" / "again")
    assert json.loads((again / MANIFEST).read_text(encoding="utf-8"))["identity"] != manifest["identity"]


def test_an_architecture_without_adapter_is_named(tmp_path: Path) -> None:
    source = tmp_path / "my-opt"
    OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32, num_attention_heads=2, architectures=["OPTForCausalLM"]).save_pretrained(source)
    with pytest.raises(UnsupportedArchitectureError, match=r"architecture 'opt' \(OPTForCausalLM\) has no adapter.*llama"):
        materialize(str(source), tmp_path / "models" / "my-opt")
