"""MEND on the tiny models: training lowers the validation loss, a trained edit raises the target, the untrained
control keeps the identity network with the trained editor's statistics, deltas are exact low-rank factors
and revert is bit-exact after a chain of edits (float32 and float16); a batch of requests is one joint edit
(the batch loss's per-token gradient factors through the editor, summed) that raises every target; the
training file is a checked choice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import pytest
import torch
import yaml
from fixtures_models import build_tiny, build_tiny_gpt2, single_thread, snapshot  # noqa: F401 (single_thread: autouse)

from kepitfalls.deltas.codecs import LowRankDelta
from kepitfalls.deltas.composed import ComposedDelta
from kepitfalls.editing import load_deltas, store_deltas
from kepitfalls.general.chain import batch_cases
from kepitfalls.mend import train as mend_train
from kepitfalls.mend.edit import Scored, Top, gradient_factors
from kepitfalls.mend.net import MendEditor, load_editor
from kepitfalls.methods import MEND as mend_module
from kepitfalls.methods.MEND import EDITOR_FILE, MEND, MENDHparams, TrainFile
from kepitfalls.methods.MEND_untrained import MENDUntrained
from kepitfalls.models.adapters import get_module
from kepitfalls.params import PROJECT_ROOT, ParamsError, load_params
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
                lr=1e-3, lr_lr=1e-3, cedit=0.1, cloc=1.0, accumulate_bs=2, grad_clip=100.0, train_steps=40, val_records=4,
                train_file="zsre_mend_train-1k.json")
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
    metrics = method.prepare(lm, SimpleNamespace(seed=0, model_key="tiny"), out_dir)
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
    parts = []
    for request in requests:  # each edit computed on the model carrying the previous ones
        parts.append(method.edit(lm, [request]))
        parts[-1].apply(lm.model)
    for part in reversed(parts):
        part.revert(lm.model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(lm.model).items())
    first = parts[0]
    assert isinstance(first, LowRankDelta) and list(first.factors) == method.sites(lm)
    tokens = len(lm.tokenizer("Where is Berlin?")["input_ids"]) + len(lm.tokenizer(" Tokyo")["input_ids"])
    for u, v in first.factors.values():
        assert u.dtype == v.dtype == torch.float32 and 1 <= u.shape[1] == v.shape[1] <= tokens - 1
    delta = ComposedDelta(parts)
    delta.apply(lm.model)
    assert any(not torch.equal(before[k], v) for k, v in snapshot(lm.model).items())
    delta.revert(lm.model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(lm.model).items())
    joint = method.edit(lm, requests)
    assert isinstance(joint, LowRankDelta)
    joint.apply(lm.model)
    joint.revert(lm.model)
    assert all(torch.equal(before[k], v) for k, v in snapshot(lm.model).items())


BATCH = [EditRequest("Where is {}?", "Berlin", "Tokyo", "Germany"), EditRequest("Where is {}?", "Apple", "Spain Italy", "Japan")]


def test_batch_factors_are_the_batch_gradient(zsre_dir: Path, tmp_path: Path) -> None:
    """Σ_t δ_t x_tᵀ of the joint edit's factors is the autograd gradient, with respect to each edited weight,
    of the mean NLL over both requests' target tokens (each request scored alone, unpadded)."""
    lm = build_tiny("tiny-llama")
    method, _ = prepared(MEND, lm, tmp_path, train_steps=2)
    modules = method.sites(lm)
    scored = [Scored.of(lm.tokenizer, r.rewrite_prompt, r.target_new) for r in BATCH]
    assert len(scored[0].labels) != len(scored[1].labels)  # token weighting differs from a mean of means
    factors = gradient_factors(lm, Top(lm, [s.ids for s in scored], 0), [0, 1], scored, modules)
    weights = [get_module(lm.model, m).weight.requires_grad_(True) for m in modules]
    nll, count = 0.0, 0
    try:
        with torch.enable_grad():
            for s in scored:
                logits = lm.model(input_ids=torch.tensor([s.ids])).logits[0].float().log_softmax(-1)
                nll = nll - logits[s.positions, s.labels].sum()
                count += len(s.labels)
            grads = torch.autograd.grad(nll / count, weights)
    finally:
        for weight in weights:
            weight.requires_grad_(False)
    for module, grad in zip(modules, grads):
        x, delta = factors[module]
        torch.testing.assert_close(delta.T @ x, grad, rtol=1e-4, atol=1e-6)


def test_batch_delta_sums_every_tokens_editor_output(zsre_dir: Path, tmp_path: Path) -> None:
    """The joint delta is edit_lr · Σ_t δ̃_t x̃_tᵀ over the tokens of both requests, with δ the batch loss's:
    each request's own factors, δ scaled by its share of the batch's target tokens, through the editor."""
    lm = build_tiny("tiny-gptj")
    method, _ = prepared(MEND, lm, tmp_path, train_steps=6)
    modules = method.sites(lm)
    joint = method.edit(lm, BATCH)
    scored = [Scored.of(lm.tokenizer, r.rewrite_prompt, r.target_new) for r in BATCH]
    total = sum(len(s.labels) for s in scored)
    alone = [gradient_factors(lm, Top(lm, [s.ids], 0), [0], [s], modules) for s in scored]
    stacked = {m: (torch.cat([a[m][0] for a in alone]), torch.cat([a[m][1] * (len(s.labels) / total) for a, s in zip(alone, scored)]))
               for m in modules}
    with torch.no_grad():
        expected = method.editor.updates(stacked)
    for module in modules:
        u, v = joint.factors[module]
        eu, ev = expected[module]
        assert u.shape[1] == eu.shape[1] == sum(int((a[module][1] != 0).any(-1).sum()) for a in alone)  # rank: the batch's tokens
        torch.testing.assert_close(u @ v.T, eu @ ev.T, rtol=1e-4, atol=1e-7)


def test_trained_batch_edit_raises_both_targets(zsre_dir: Path, tmp_path: Path) -> None:
    lm = build_tiny("tiny-gptj")
    method, _ = prepared(MEND, lm, tmp_path)

    def logprobs() -> list[float]:
        scores = teacher_forced(lm.model, lm.tokenizer, [r.rewrite_prompt for r in BATCH], [r.target_new for r in BATCH])
        return [sum(s.token_logprobs) for s in scores]

    before = logprobs()
    delta = method.edit(lm, BATCH)
    assert isinstance(delta, LowRankDelta)
    delta.apply(lm.model)
    after = logprobs()
    delta.revert(lm.model)
    assert all(a > b + 0.5 for a, b in zip(after, before)), (before, after)


def test_figure4_batch_mode_stores_one_joint_delta_per_checkpoint(zsre_dir: Path, tmp_path: Path) -> None:
    """chain-batch@MEND: checkpoint n's case is one low-rank delta of all n requests, not n composed edits."""
    lm = build_tiny("tiny-llama")
    method, _ = prepared(MEND, lm, tmp_path / "editor", train_steps=2)
    requests = [EditRequest("Where is {}?", s, t) for s, t in [("Berlin", "Tokyo"), ("Paris", "Rome"), ("Apple", "Spain")]]
    store_deltas(lm, "MEND", method, batch_cases(requests, [0, 1, 3]), tmp_path / "chain-batch", {"suite": "chain-batch"})
    deltas = load_deltas(tmp_path / "chain-batch")
    one, three = deltas["batch-0001"], deltas["batch-0003"]
    assert isinstance(three, LowRankDelta) and list(three.factors) == method.sites(lm)
    for module, (u, _) in three.factors.items():
        assert u.shape[1] > one.factors[module][0].shape[1]  # the rank grows with the batch's tokens
    torch.testing.assert_close(three.factors, method.edit(lm, requests).factors, rtol=0, atol=0)


def test_training_file_is_a_checked_choice(zsre_dir: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["methods"]["MEND"]["smollm2-135m"]["train_file"] = "zsre_mend_train.json"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"methods\.MEND\.smollm2-135m\.train_file: Input should be .*zsre_mend_train_10000\.json"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ValueError, match=r"methods\.MEND\.tiny\.train_file: .*zsre_mend_train_10000\.json is missing .*include_optional=true"):
        prepared(MEND, build_tiny("tiny-llama"), tmp_path, train_file="zsre_mend_train_10000.json")
    (zsre_dir / "zsre_mend_train_10000.json").write_text(json.dumps(zsre_rows()[::-1]), encoding="utf-8")
    _, metrics = prepared(MEND, build_tiny("tiny-llama"), tmp_path, train_file="zsre_mend_train_10000.json", train_steps=2)
    assert metrics["train_records"] == len(zsre_rows()) - 4


def test_no_suite_reads_a_training_file() -> None:
    """The held-out validation records come from the training file: no suite or Figure-4 file may be one."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    choices = set(get_args(TrainFile))
    text = json.dumps({"suites": params["suites"], "general": params["general"]})
    assert not [name for name in choices if name in text]


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
