"""SERAC: the scope classifier's fit, routing of an edit's prompt and rephrase, exact scores elsewhere."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from fixtures_encoder import encoder_dir  # noqa: F401
from fixtures_models import single_thread, tiny_lm, tiny_llama_lm  # noqa: F401
from kepitfalls.atomic import write_json
from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE
from kepitfalls.encoder import SentenceEncoder
from kepitfalls.methods.SERAC import (
    CLASSIFIER_FILE, COUNTERFACTUAL_FILE, ENCODER_DIR, SERAC, SERACHparams, accuracy, balanced_bce, counterfactual_examples,
    counterfactual_loss, finetune_counterfactual, finetune_encoder, fit_scale, pair_distances,
)
from kepitfalls.methods.base import Artifacts
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring import primitives as P
from kepitfalls.scoring.router import ROUTER_ATTRIBUTE, installed, routing_metrics
from kepitfalls.tensorfile import load_tensors

EDIT = EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris")
PROMPTS = [
    "The Eiffel Tower is located in the city of",  # the edited prompt
    "The Eiffel Tower can be found in the city of",  # its rephrase
    "Danielle Darrieux's mother tongue is",  # unrelated
]
HPARAMS = SERACHparams(encoder="all-minilm-l6-v2", train_file="zsre_mend_train-1k.json", holdout=200, steps=300,
                       lr=0.05, classifier="frozen_scale", finetune_steps=1, finetune_lr=1e-5, finetune_batch=1, counterfactual="freeze_cntr", cntr_steps=1, cntr_lr=1e-5, cntr_batch=1, seed=0)


def _serac(tmp_path: Path, encoder_dir: Path, scale: float = 1.455) -> SERAC:  # noqa: F811
    write_json(tmp_path / CLASSIFIER_FILE, {"encoder": "all-minilm-l6-v2", "scale": scale})
    method = SERAC(HPARAMS, Artifacts(method_dir=tmp_path))
    method.__dict__["_encoder"] = SentenceEncoder(encoder_dir)  # the fixture's files, not the workspace's
    return method


def test_the_fitted_scale_separates_near_from_far_pairs() -> None:
    positive, negative = torch.tensor([0.05, 0.1, 0.2, 0.3]), torch.tensor([0.9, 1.0, 1.2, 1.5])
    scale = fit_scale(positive, negative, steps=300, lr=0.05)
    assert accuracy(positive, negative, scale) == 1.0
    assert accuracy(positive, negative, 1e-3) == 0.5  # every pair in scope: negatives all wrong


def test_edited_prompt_and_rephrase_routed_unrelated_prompt_exactly_unchanged(
    tiny_lm: LoadedModel, tmp_path: Path, encoder_dir: Path  # noqa: F811
) -> None:
    method = _serac(tmp_path, encoder_dir)
    targets = ["Rome", "Rome", "French"]
    before = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, targets)
    delta = method.edit(tiny_lm, [EDIT])
    with installed(tiny_lm.model, method.router()) as router:
        delta.apply(tiny_lm.model)
        try:
            after = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, targets)
        finally:
            delta.revert(tiny_lm.model)
    counterfactual = [f"The Eiffel Tower is located in the city of Rome {p}" for p in PROMPTS[:2]]
    assert after[:2] == P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, counterfactual, targets[:2])
    assert after[2] == before[2]  # out of scope: the base model's very numbers
    assert routing_metrics(router) == {"routing_teacher_forced_routed": 2.0, "routing_teacher_forced_seen": 3.0}
    assert not getattr(tiny_lm.model, MEMORY_ATTRIBUTE) and not hasattr(tiny_lm.model, ROUTER_ATTRIBUTE)
    assert P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, targets) == before


def test_sequential_edits_accumulate_in_the_memory(tiny_lm: LoadedModel, tmp_path: Path, encoder_dir: Path) -> None:  # noqa: F811
    method = _serac(tmp_path, encoder_dir)
    second = EditRequest("{} speaks the language", "Danielle Darrieux", "English", "French")
    first_delta = method.edit(tiny_lm, [EDIT])
    with installed(tiny_lm.model, method.router()):
        first_delta.apply(tiny_lm.model)
        try:
            second_delta = method.edit(tiny_lm, [second])  # computed on the edited model, as a sequential suite does
        finally:
            first_delta.revert(tiny_lm.model)
    router = method.router()
    rewritten = router.rewrite([first_delta, second_delta], [PROMPTS[0], "Danielle Darrieux speaks the language"])
    assert rewritten == [
        f"The Eiffel Tower is located in the city of Rome {PROMPTS[0]}",
        "Danielle Darrieux speaks the language English Danielle Darrieux speaks the language",
    ]


def _zsre(directory: Path, count: int) -> None:
    """A MEND-schema zsRE file of `count` records: each question with its rephrase and an unrelated NQ question."""
    cities = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague"]
    records = [
        {"subject": f"Person {i}", "src": f"In which city was Person {i} born?", "pred": "x",
         "rephrase": f"What is the birthplace of Person {i}?", "alt": cities[i % len(cities)], "answers": ["x"],
         "loc": f"nq question: how many legs does a {['spider', 'cat', 'bird', 'ant'][i % 4]} have", "loc_ans": "8"}
        for i in range(count)
    ]
    (directory / "zsre").mkdir(parents=True)
    write_json(directory / "zsre" / "train.json", records)


def _serac_on_zsre(tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, **update: Any) -> tuple[SERAC, Path]:
    """A SERAC with `update`d hyper-parameters on a 12-record zsRE training file, its prepare directory empty,
    reading the test encoder."""
    from kepitfalls import layout

    _zsre(tmp_path / "raw", 12)
    monkeypatch.setattr(layout, "raw_root", lambda: tmp_path / "raw")
    monkeypatch.setattr(layout, "encoder_dir", lambda name: encoder_dir)
    hparams = HPARAMS.model_copy(update={"train_file": "train.json", "holdout": 4, **update})
    out = tmp_path / "SERAC"
    out.mkdir()
    method = SERAC(hparams, Artifacts(method_dir=out))
    method.__dict__["_encoder"] = SentenceEncoder(encoder_dir)
    return method, out


def test_the_finetuned_classifier_is_trained_saved_and_read_by_router_and_edits(
    tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    method, out = _serac_on_zsre(tmp_path, encoder_dir, monkeypatch, steps=50, classifier="finetuned", finetune_steps=4,
                                 finetune_lr=1e-4, finetune_batch=4)
    figures = method.prepare(None, None, out)  # type: ignore[arg-type]
    assert figures["finetune_last_loss"] < figures["finetune_first_loss"]
    assert 0.0 <= figures["heldout_accuracy"] <= 1.0 and "frozen_heldout_accuracy" in figures
    assert json.loads((out / CLASSIFIER_FILE).read_text())["classifier"] == "finetuned"
    tuned, frozen = SentenceEncoder(out / ENCODER_DIR), SentenceEncoder(encoder_dir)
    assert not torch.equal(tuned.encode(PROMPTS), frozen.encode(PROMPTS))  # the weights moved, the frozen files did not
    assert method.router().encoder.model is method._scope_encoder.model
    assert torch.equal(method.edit(None, [EDIT]).tensors["keys"], tuned.encode([EDIT.rewrite_prompt]))  # type: ignore[arg-type]
    assert (out / ENCODER_DIR / "model.safetensors") in method.upstream_files()


def test_finetuning_lowers_the_balanced_bce_of_the_training_pairs(encoder_dir: Path) -> None:  # noqa: F811
    positives = [(PROMPTS[0], PROMPTS[1]), ("Who wrote Hamlet?", "Hamlet was written by whom?")]
    negatives = [(PROMPTS[0], PROMPTS[2]), ("Who wrote Hamlet?", "How many legs does a spider have?")]
    encoder = SentenceEncoder(encoder_dir)

    def loss() -> float:
        return float(balanced_bce(pair_distances(encoder, positives), pair_distances(encoder, negatives), 5.0))

    before = loss()
    finetune_encoder(encoder, positives, negatives, 5.0, steps=5, lr=1e-4, batch=2, rng=random.Random(0))
    assert loss() < before


def test_finetuning_the_counterfactual_model_lowers_its_loss_on_the_answers(tiny_llama_lm: LoadedModel) -> None:  # noqa: F811
    records = [SimpleNamespace(src=f"Where was Person {i} born?", alt=city, rephrase=f"What is the birthplace of Person {i}?")
               for i, city in enumerate(["Paris", "Rome", "Oslo", "Lisbon"])]
    examples = counterfactual_examples(records)
    assert examples[1] == ("Where was Person 1 born? Rome What is the birthplace of Person 1?", "Rome")
    model = copy.deepcopy(tiny_llama_lm.model).requires_grad_(True)
    with torch.no_grad():
        before = float(counterfactual_loss(model, tiny_llama_lm.tokenizer, examples))
    losses = finetune_counterfactual(model, tiny_llama_lm.tokenizer, examples, steps=5, lr=1e-3, batch=4, rng=random.Random(0))
    with torch.no_grad():
        after = float(counterfactual_loss(model, tiny_llama_lm.tokenizer, examples))
    assert losses[0] == pytest.approx(before) and after < before
    with pytest.raises(ValueError, match="loss is nan at step 0; lower cntr_lr"):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        finetune_counterfactual(model, tiny_llama_lm.tokenizer, examples, steps=1, lr=1e-3, batch=4, rng=random.Random(0))


def test_a_finetuned_counterfactual_model_scores_the_routed_prompts_and_the_base_model_the_rest(
    tiny_lm: LoadedModel, tmp_path: Path, encoder_dir: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    prepared, out = _serac_on_zsre(tmp_path, encoder_dir, monkeypatch, steps=5, counterfactual="finetuned", cntr_steps=3,
                                   cntr_lr=1e-3, cntr_batch=4)
    hparams = prepared.hparams
    figures = prepared.prepare(tiny_lm, None, out)  # type: ignore[arg-type]
    assert math.isfinite(figures["cntr_last_loss"]) and figures["cntr_bytes"] == (out / COUNTERFACTUAL_FILE).stat().st_size
    assert (out / COUNTERFACTUAL_FILE) in prepared.upstream_files()
    write_json(out / CLASSIFIER_FILE, {"encoder": "all-minilm-l6-v2", "scale": 1.455})  # the scale that routes PROMPTS[:2]
    method = SERAC(hparams, Artifacts(method_dir=out))
    method.__dict__["_encoder"] = SentenceEncoder(encoder_dir)

    tuned = copy.deepcopy(tiny_lm.model)
    tuned.load_state_dict(load_tensors(out / COUNTERFACTUAL_FILE)[0], strict=False)
    targets = ["Rome", "Rome", "French"]
    counterfactual = [f"The Eiffel Tower is located in the city of Rome {p}" for p in PROMPTS[:2]]

    def scores(model: torch.nn.Module, prompts: list[str]) -> tuple:
        return (P.teacher_forced(model, tiny_lm.tokenizer, prompts, targets[: len(prompts)]),
                P.next_token_logprobs(model, tiny_lm.tokenizer, prompts),
                P.greedy_generate(model, tiny_lm.tokenizer, prompts, max_new_tokens=3),
                [s.forced for s in P.score_prompts(model, tiny_lm.tokenizer, prompts, [[t] for t in targets[: len(prompts)]])])

    before, direct, frozen = scores(tiny_lm.model, PROMPTS), scores(tuned, counterfactual), scores(tiny_lm.model, counterfactual)
    delta = method.edit(tiny_lm, [EDIT])
    with installed(tiny_lm.model, method.router()):
        delta.apply(tiny_lm.model)
        try:
            after = scores(tiny_lm.model, PROMPTS)
        finally:
            delta.revert(tiny_lm.model)
    assert after[0][:2] == direct[0] and after[0][:2] != frozen[0] and after[0][2] == before[0][2]
    assert torch.equal(after[1][:2], direct[1]) and not torch.equal(after[1][:2], frozen[1]) and torch.equal(after[1][2], before[1][2])
    assert after[2][:2] == direct[2] and after[2][2] == before[2][2]
    assert after[3][:2] == direct[3] and after[3][2] == before[3][2]
    assert not getattr(tiny_lm.model, MEMORY_ATTRIBUTE) and not hasattr(tiny_lm.model, ROUTER_ATTRIBUTE)
    restored = scores(tiny_lm.model, PROMPTS)
    assert restored[0] == before[0] and torch.equal(restored[1], before[1]) and restored[2:] == before[2:]


