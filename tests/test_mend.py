"""MEND on the tiny models: training lowers the validation loss, a trained edit raises the target, the untrained
control keeps the identity network with the trained editor's statistics, deltas are exact low-rank factors
and revert is bit-exact after a chain of edits (float32 and float16)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fixtures_models import build_tiny, build_tiny_gpt2, single_thread, snapshot  # noqa: F401 (single_thread: autouse)

from kepitfalls.deltas.codecs import LowRankDelta
from kepitfalls.deltas.composed import ComposedDelta
from kepitfalls.mend import train as mend_train
from kepitfalls.mend.net import MendEditor, load_editor
from kepitfalls.methods import MEND as mend_module
from kepitfalls.methods.MEND import EDITOR_FILE, MEND, MENDHparams
from kepitfalls.methods.MEND_untrained import MENDUntrained
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.primitives import teacher_forced

PLACES = ["Paris", "Rome", "Berlin", "Madrid", "Toyota", "Apple", "London", "Japan", "France", "Italy", "Spain", "Germany"]


def zsre_rows() -> list[dict]:
    """MEND-schema records on the tiny tokenizer's corpus words (the new answer is another place)."""
    return [
        {"subject": s, "src": f"Where is {s}?", "pred": "", "rephrase": f"In which place is {s}?",
         "alt": PLACES[(i + 3) % len(PLACES)], "answers": [PLACES[i]], "loc": f"Who wrote Hamlet number {i}?",
         "loc_ans": "William Shakespeare"}
        for i, s in enumerate(PLACES)
    ]


def hparams(**changes) -> MENDHparams:
    base = dict(layers=[0, 1], modules=["mlp_pre_act", "mlp_in", "mlp_out"], rank=16, n_hidden=1, edit_lr=1e-4,
                lr=1e-3, lr_lr=1e-3, cedit=0.1, cloc=1.0, accumulate_bs=2, grad_clip=100.0, train_steps=40, val_records=4)
    return MENDHparams(**{**base, **changes})


@pytest.fixture
def zsre_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/raw/zsre with a small training file, where `prepare` looks for it."""
    raw = tmp_path / "raw"
    (raw / "zsre").mkdir(parents=True)
    (raw / "zsre" / "zsre_mend_train-1k.json").write_text(json.dumps(zsre_rows()), encoding="utf-8")
    from kepitfalls import layout

    monkeypatch.setattr(layout, "raw_root", lambda: raw)
    return raw / "zsre"


def prepared(method_type: type[MEND], lm, out_dir: Path, **changes) -> tuple[MEND, dict]:
    method = method_type(hparams(**changes))
    metrics = method.prepare(lm, SimpleNamespace(seed=0), out_dir)
    method.artifacts.method_dir = out_dir
    return method, metrics


def outer_loss(metrics: dict, hp: MENDHparams) -> float:
    return hp.cedit * metrics["val_edit_nll"] + hp.cloc * metrics["val_loc_kl"]


def test_training_reduces_validation_loss(zsre_dir: Path, tmp_path: Path) -> None:
    lm = build_tiny("tiny-llama")
    _, untrained = prepared(MENDUntrained, lm, tmp_path / "untrained")
    _, trained = prepared(MEND, lm, tmp_path / "trained")
    assert trained["train_updates"] == 20 and untrained["train_updates"] == 0
    assert outer_loss(trained, hparams()) < outer_loss(untrained, hparams())
    assert trained["val_edit_success"] > untrained["val_edit_success"]


def test_trained_edit_raises_target(zsre_dir: Path, tmp_path: Path) -> None:
    lm = build_tiny("tiny-gptj")
    method, _ = prepared(MEND, lm, tmp_path)
    request = EditRequest("Where is {}?", "Berlin", "Tokyo", "Germany")
    prompt = request.rewrite_prompt

    def logprob() -> float:
        return sum(teacher_forced(lm.model, lm.tokenizer, [prompt], [request.target_new])[0].token_logprobs)

    before = logprob()
    delta = method.edit(lm, [request])
    delta.apply(lm.model)
    after = logprob()
    delta.revert(lm.model)
    assert after > before + 0.5


def test_untrained_control_is_the_identity_with_the_trained_statistics(zsre_dir: Path, tmp_path: Path) -> None:
    lm = build_tiny("tiny-llama")
    prepared(MEND, lm, tmp_path / "trained")
    prepared(MENDUntrained, lm, tmp_path / "untrained")
    trained, meta = load_editor(tmp_path / "trained" / EDITOR_FILE)
    control, control_meta = load_editor(tmp_path / "untrained" / EDITOR_FILE)
    assert meta["trained"] is True and control_meta["trained"] is False
    fresh = MendEditor(control.shapes, 16, 1, 1e-4, seed=0).state_dict()
    for name, tensor in control.state_dict().items():
        if "norm" in name:
            assert torch.equal(tensor, trained.state_dict()[name]), name  # same training edits, same statistics
        else:
            assert torch.equal(tensor, fresh[name]), name  # the network and learning rates as initialised
    assert not torch.equal(trained.edit_lrs, control.edit_lrs)


def test_prepare_is_deterministic(zsre_dir: Path, tmp_path: Path) -> None:
    for run in ("a", "b"):
        prepared(MEND, build_tiny("tiny-llama"), tmp_path / run, train_steps=6)
    assert (tmp_path / "a" / EDITOR_FILE).read_bytes() == (tmp_path / "b" / EDITOR_FILE).read_bytes()


def test_non_finite_loss_stops_training(zsre_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 0 \(zsRE training record \d+\)"):
        prepared(MEND, build_tiny("tiny-llama"), tmp_path, edit_lr=float("inf"))


def test_validation_never_sees_training_records() -> None:
    lm = build_tiny("tiny-llama")
    items = mend_train.examples(lm.tokenizer, [_record(i, row) for i, row in enumerate(zsre_rows())])
    train, val = mend_train.split(items, 4, seed=0)
    assert len(val) == 4 and len(train) == len(items) - 4
    assert not {e.record for e in train} & {e.record for e in val}


def _record(index: int, row: dict):
    from kepitfalls.data.zsre import ZsreRecord

    return ZsreRecord(index, row["subject"], row["src"], row["pred"], row["rephrase"], row["alt"], tuple(row["answers"]),
                      row["loc"], row["loc_ans"])


@pytest.mark.parametrize(("name", "dtype"), [(n, d) for n in ("tiny-gptj", "tiny-llama") for d in ("float32", "float16")]
                         + [("tiny-gpt2", "float32")])  # GPT-2: Conv1D weights, full passes (no residual restart)
def test_chain_reverts_bit_exact(name: str, dtype: str, zsre_dir: Path, tmp_path: Path) -> None:
    lm = build_tiny_gpt2() if name == "tiny-gpt2" else build_tiny(name, dtype=dtype)
    method, _ = prepared(MEND, lm, tmp_path, train_steps=6)
    requests = [EditRequest("Where is {}?", s, t) for s, t in [("Berlin", "Tokyo"), ("Paris", "Rome"), ("Apple", "Spain")]]
    before = snapshot(lm.model)
    delta = method.edit(lm, requests)
    assert snapshot(lm.model).keys() == before.keys() and all(torch.equal(before[k], v) for k, v in snapshot(lm.model).items())
    assert isinstance(delta, ComposedDelta) and len(delta.parts) == 3
    first = delta.parts[0]
    assert isinstance(first, LowRankDelta) and list(first.factors) == method.sites(lm)
    tokens = len(lm.tokenizer("Where is Berlin?")["input_ids"]) + len(lm.tokenizer(" Tokyo")["input_ids"])
    for u, v in first.factors.values():
        assert u.dtype == v.dtype == torch.float32 and 1 <= u.shape[1] == v.shape[1] <= tokens - 1
    delta.apply(lm.model)
    assert any(not torch.equal(before[k], v) for k, v in snapshot(lm.model).items())
    delta.revert(lm.model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(lm.model).items())


def test_an_editor_from_other_code_is_refused(zsre_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = build_tiny("tiny-llama")
    method, _ = prepared(MEND, lm, tmp_path, train_steps=2)
    monkeypatch.setattr(mend_module, "code_hash", lambda: "changed")
    with pytest.raises(ValueError, match=r"trained by other MEND code .* prepare@MEND"):
        method.edit(lm, [EditRequest("Where is {}?", "Berlin", "Tokyo")])


def test_missing_editor_names_the_stage() -> None:
    with pytest.raises(FileNotFoundError, match=r"prepare@MEND"):
        MEND(hparams()).upstream_files()


def test_describe_names_the_training_length() -> None:
    assert "40 edits" in mend_module.describe(hparams())
