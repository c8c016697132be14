"""GRACE on the tiny models: the codebook answers the edited prompt, leaves prompts outside every radius
bit-identical, splits and grows radii as the reference, and a chain of edits reverts to the plain model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures_models import TINY_NAMES, build_tiny, build_tiny_gpt2, changed_tensors, single_thread, snapshot  # noqa: F401
from kepitfalls.deltas.codebook import Codebook, CodebookDelta
from kepitfalls.deltas.composed import ComposedDelta
from kepitfalls.deltas.store import DeltaStore
from kepitfalls.methods.GRACE import GRACE, GRACEHparams
from kepitfalls.models.adapters import get_module
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.diagnostics import INSTALLED_ATTRIBUTE, prompt_diagnostics
from kepitfalls.scoring.primitives import next_token_logprobs, teacher_forced

LAYER = 2
# Radii on the scale of each model's inputs to layer 2's MLP output (measured: "... city of" and "... town
# of" are 0.18 apart in tiny GPT-J, 0.038 in tiny Llama; the other prompts here at least 1.5 and 0.18).
EPS = {"tiny-gptj": 0.12, "tiny-llama": 0.025}
EDIT = EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris")
NEAR = "{} is located in the town of"
OTHER = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Dutch", "French")
UNRELATED = ["The cat sat on the mat", "Question: who wrote Hamlet? Answer:"]


def sharp(name: str, dtype: str | None = None) -> LoadedModel:
    """A tiny model with its LM head scaled by 16 (a power of two), so that an edit can make a token the argmax."""
    lm = build_tiny(name, dtype=dtype)
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(16)
    return lm


def grace(eps: float, n_iter: int = 40) -> GRACE:
    return GRACE(GRACEHparams(layer=LAYER, site="mlp_out", n_iter=n_iter, edit_lr=1.0, eps=eps, val_init="cold",
                              replacement="replace_last", eps_expand="coverage", seed=0))


def codebook(lm: LoadedModel) -> Codebook | None:
    return Codebook.of(lm.model, lm.arch.mlp_out.format(LAYER))


def no_adaptor_left(lm: LoadedModel) -> bool:
    module = get_module(lm.model, lm.arch.mlp_out.format(LAYER))
    return INSTALLED_ATTRIBUTE not in lm.model.__dict__ and not module._forward_hooks


@pytest.mark.parametrize("name", TINY_NAMES)
def test_grace_answers_the_edit_and_leaves_unrelated_prompts_exactly(name: str) -> None:
    lm = sharp(name)
    before = snapshot(lm.model)
    pre_edit = teacher_forced(lm.model, lm.tokenizer, [EDIT.rewrite_prompt], [EDIT.target_new])[0]
    pre_unrelated = next_token_logprobs(lm.model, lm.tokenizer, UNRELATED)
    delta = grace(EPS[name]).edit(lm, [EDIT])
    assert isinstance(delta, CodebookDelta) and no_adaptor_left(lm) and changed_tensors(lm.model, before) == set()
    assert pre_edit.token_accuracy < 1.0  # the unedited model does not already answer "Rome"

    delta.apply(lm.model)
    post_edit = teacher_forced(lm.model, lm.tokenizer, [EDIT.rewrite_prompt], [EDIT.target_new])[0]
    assert post_edit.token_accuracy == 1.0 and post_edit.mean_prob > 0.5
    found = prompt_diagnostics(lm, {"edit": [EDIT.rewrite_prompt], "unrelated": UNRELATED})
    assert found["codebook_hit_edit"] == [100.0] and found["codebook_distance_edit"][0] < 1e-4
    assert found["codebook_hit_unrelated"] == [0.0, 0.0] and min(found["codebook_distance_unrelated"]) > EPS[name]
    assert torch.equal(next_token_logprobs(lm.model, lm.tokenizer, UNRELATED), pre_unrelated)
    assert changed_tensors(lm.model, before) == set()  # no weight changes at all
    delta.revert(lm.model)
    assert no_adaptor_left(lm)
    assert prompt_diagnostics(lm, {"edit": [EDIT.rewrite_prompt]}) == {}  # a plain model reports nothing


@pytest.mark.parametrize("name", TINY_NAMES)
def test_chain_of_edits_composes_stores_and_reverts_bit_exactly(name: str, tmp_path: Path) -> None:
    lm = sharp(name)
    before = snapshot(lm.model)
    pre = {prompt: next_token_logprobs(lm.model, lm.tokenizer, [prompt]) for prompt in [EDIT.rewrite_prompt, *UNRELATED]}
    eps = EPS[name]
    chain = grace(eps, n_iter=10).edit(lm, [EDIT, OTHER, EditRequest(NEAR, EDIT.subject, "Paris")])
    assert isinstance(chain, ComposedDelta) and no_adaptor_left(lm)
    first, second, third = chain.parts
    assert first.entry is not None and second.entry is not None and not first.eps_changes and not second.eps_changes
    # a prompt within 2ε of the first key, with another label: a new entry, both radii split to d/2 (the older
    # one 1e-5 less)
    assert third.entry is not None and third.eps_changes[0][:2] == (0, eps) and third.entry.eps < eps
    assert third.eps_changes[0][2] == pytest.approx(third.entry.eps - 1e-5, abs=1e-7)
    pre[NEAR.format(EDIT.subject)] = next_token_logprobs(lm.model, lm.tokenizer, [NEAR.format(EDIT.subject)])

    store = DeltaStore(tmp_path)
    store.put("k", chain)
    for delta in (chain, store.get("k")):
        delta.apply(lm.model)
        assert [e.eps for e in codebook(lm).entries] == [third.eps_changes[0][2], eps, third.entry.eps]
        after = {prompt: next_token_logprobs(lm.model, lm.tokenizer, [prompt]) for prompt in pre}
        assert [torch.equal(after[p], pre[p]) for p in pre] == [False, True, True, False]  # edit, unrelated ×2, near
        delta.revert(lm.model)
        assert no_adaptor_left(lm) and changed_tensors(lm.model, before) == set()
        assert all(torch.equal(next_token_logprobs(lm.model, lm.tokenizer, [p]), pre[p]) for p in pre)


def test_same_label_grows_the_radius_and_retrains_the_value() -> None:
    """An edit near a key with the same label adds no entry: the nearest radius grows to the distance
    (coverage) and that key's value is trained further; revert restores both."""
    lm = sharp("tiny-llama")
    eps = EPS["tiny-llama"]
    method = grace(eps, n_iter=10)
    first = method.edit(lm, [EDIT])
    first.apply(lm.model)
    try:
        again = method.edit(lm, [EditRequest(NEAR, EDIT.subject, EDIT.target_new)])
        assert again.entry is None and list(again.value_changes) == [0]
        distance = prompt_diagnostics(lm, {"p": [NEAR.format(EDIT.subject)]})["codebook_distance_p"][0]
        assert eps < distance <= 2 * eps  # near enough for the same-label branch, too far for the old radius
        assert again.eps_changes == [(0, eps, pytest.approx(distance, abs=1e-5))]
        old_value = codebook(lm).entries[0].value
        again.apply(lm.model)
        assert len(codebook(lm).entries) == 1 and not torch.equal(codebook(lm).entries[0].value, old_value)
        again.revert(lm.model)
        assert torch.equal(codebook(lm).entries[0].value, old_value) and codebook(lm).entries[0].eps == eps
    finally:
        first.revert(lm.model)
    assert no_adaptor_left(lm)


def test_a_delta_refuses_a_codebook_in_another_state() -> None:
    lm = sharp("tiny-gptj")
    method = grace(EPS["tiny-gptj"], n_iter=5)
    first = method.edit(lm, [EDIT])
    first.apply(lm.model)
    split = method.edit(lm, [EditRequest(NEAR, EDIT.subject, "Paris")])
    assert split.eps_changes
    first.revert(lm.model)
    with pytest.raises(RuntimeError, match="not installed"):
        split.apply(lm.model)
    assert no_adaptor_left(lm)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_half_precision(name: str, dtype: str) -> None:
    """Keys and values are float32 whatever the weights' dtype; the value is cast to the module's output
    dtype when it replaces it; revert leaves every bit and no hook behind."""
    lm = sharp(name, dtype=dtype)
    before = snapshot(lm.model)
    pre = teacher_forced(lm.model, lm.tokenizer, [EDIT.rewrite_prompt], [EDIT.target_new])[0]
    pre_unrelated = next_token_logprobs(lm.model, lm.tokenizer, UNRELATED)
    chain = grace(EPS[name]).edit(lm, [OTHER, EDIT])
    tensors, _ = chain.state()
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    chain.apply(lm.model)
    post = teacher_forced(lm.model, lm.tokenizer, [EDIT.rewrite_prompt], [EDIT.target_new])[0]
    assert post.token_accuracy == 1.0 and post.mean_prob > pre.mean_prob
    assert torch.equal(next_token_logprobs(lm.model, lm.tokenizer, UNRELATED), pre_unrelated)
    chain.revert(lm.model)
    assert no_adaptor_left(lm) and changed_tensors(lm.model, before) == set()


def test_counterfact_reports_installed_diagnostics_per_prompt_set() -> None:
    """Diagnostics become `<quantity>_<set>` metrics, each the mean over cases of the case's prompt mean, with
    rows that reproduce it; cases without components add nothing (other methods' metrics are unchanged)."""
    from kepitfalls.metrics.counterfact import CaseScores, PromptScore, counterfact_metrics, counterfact_records
    from kepitfalls.metrics.records import by_metric, statistic

    score = PromptScore(0.5, 0.1)
    plain = CaseScores(rewrite=score, paraphrase=(score,), neighborhood=(score,))
    assert set(counterfact_metrics([plain, plain])) == {"ES", "EM", "PS", "PM", "NS", "NM", "Score", "cases"}

    cases = [
        CaseScores(rewrite=score, paraphrase=(score, score), neighborhood=(score,),
                   diagnostics={"codebook_hit_paraphrase": (100.0, 0.0), "codebook_distance_paraphrase": (0.5, 3.0)}),
        CaseScores(rewrite=score, paraphrase=(score, score), neighborhood=(score,),
                   diagnostics={"codebook_hit_paraphrase": (0.0, 0.0), "codebook_distance_paraphrase": (2.0, 4.0)}),
    ]
    metrics = counterfact_metrics(cases)
    assert metrics["codebook_hit_paraphrase"] == pytest.approx(25.0)
    assert metrics["codebook_distance_paraphrase"] == pytest.approx((1.75 + 3.0) / 2)
    rows = by_metric(counterfact_records(cases, ["a", "b"]))
    assert statistic(rows["codebook_hit_paraphrase"]) == pytest.approx(25.0)
    assert rows["codebook_distance_paraphrase"][1]["prompts"] == [2.0, 4.0]


def test_a_conflict_on_the_same_prompt_splits_to_zero_radii() -> None:
    """The same prompt with another label (distance 0): the reference's split leaves the older key a negative
    radius and the new one radius 0, and the older key wins the tie, so the new value never fires and its
    training stops at once; the delta still records both changes and reverts exactly."""
    lm = sharp("tiny-gptj")
    before = snapshot(lm.model)
    chain = grace(EPS["tiny-gptj"], n_iter=5).edit(lm, [EDIT, EditRequest(EDIT.prompt, EDIT.subject, "Paris")])
    second = chain.parts[1]
    assert second.entry is not None and second.entry.eps == pytest.approx(0.0, abs=1e-6)
    assert second.eps_changes[0][:2] == (0, EPS["tiny-gptj"]) and second.eps_changes[0][2] < 0
    chain.apply(lm.model)
    chain.revert(lm.model)
    assert no_adaptor_left(lm) and changed_tensors(lm.model, before) == set()


def test_reverting_out_of_order_is_refused_and_changes_nothing() -> None:
    lm = sharp("tiny-llama")
    first, second = grace(EPS["tiny-llama"], n_iter=3).edit(lm, [EDIT, OTHER]).parts
    first.apply(lm.model)
    second.apply(lm.model)
    with pytest.raises(RuntimeError, match="out of order"):
        first.revert(lm.model)
    assert len(codebook(lm).entries) == 2
    second.revert(lm.model)
    first.revert(lm.model)
    assert no_adaptor_left(lm)


def test_gpt2_runs_the_whole_model_and_wraps_its_conv1d() -> None:
    """GPT-2 (position embeddings: no restart from a cached residual; Conv1D weights): the edit still answers."""
    lm = build_tiny_gpt2()
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(16)  # tied to the embeddings: scales both, still a power of two
    before = snapshot(lm.model)
    method = GRACE(GRACEHparams(layer=0, site="mlp_out", n_iter=40, edit_lr=1.0, eps=0.01, val_init="warm",
                                replacement="replace_last", eps_expand="coverage", seed=0))
    delta = method.edit(lm, [EDIT])
    delta.apply(lm.model)
    post = teacher_forced(lm.model, lm.tokenizer, [EDIT.rewrite_prompt], [EDIT.target_new])[0]
    delta.revert(lm.model)
    assert post.token_accuracy == 1.0
    assert changed_tensors(lm.model, before) == set() and INSTALLED_ATTRIBUTE not in lm.model.__dict__


def _suite_config(suite: str):
    from kepitfalls.suites import locality, portability

    if suite == "portability":
        return portability, portability.Config(benchmark="easyedit_portability", subset_size=1, seed=0, known_only=False,
                                               datasets=portability.Datasets(SR="zsre", RR="zsre", OH="zsre"))
    files = locality.Files(OA="zsre/knowedit_derived/ZsRE-test-all.json",
                           DN="easyedit_portability/portability/One Hop/counterfact_portability_gpt4.json", OT="piqa")
    return locality, locality.Config(benchmark="zsre", subset_size=1, seed=0, piqa_size=2, known_only=False, files=files)


@pytest.mark.parametrize(("suite", "columns"), [("portability", ("SR", "RR", "OH")), ("locality", ("OA", "DN"))])
def test_suites_report_codebook_hits_per_column(suite: str, columns: tuple[str, ...]) -> None:
    """Each record's probes are diagnosed under its column (`codebook_hit_SR`, `codebook_distance_DN`, …), with
    rows that reproduce the metric; the real mirrored records, one per column."""
    from mirror import MIRROR

    from fixtures_models import build_deltas
    from kepitfalls.metrics.records import by_metric, statistic

    if not (MIRROR / "easyedit_portability").is_dir() or not (MIRROR / "piqa").is_dir():
        pytest.skip(f"no benchmark mirror at {MIRROR}")
    module, config = _suite_config(suite)
    lm = build_tiny("tiny-gptj")
    records = module.select(lm, MIRROR, config)
    deltas = build_deltas(lm, module.edit_cases(records), grace(EPS["tiny-gptj"], n_iter=2))
    evaluation = module.evaluate(lm, records, deltas, module.pre_scores(lm, records))
    rows = by_metric(evaluation.records)
    for column in columns:
        for quantity in ("codebook_hit", "codebook_distance"):
            name = f"{quantity}_{column}"
            assert len(rows[name]) == 1 and statistic(rows[name]) == pytest.approx(evaluation.metrics[name])
    assert no_adaptor_left(lm)


@pytest.mark.parametrize("suite", ["conflict", "round"])
def test_sequential_suites_chain_codebook_edits_and_revert(suite: str) -> None:
    """ConflictEdit and RoundEdit compute the second edit on the first-edited model: the codebook delta of the
    second records its changes to the first's entry, evaluation applies the same chain, and every chain reverts
    to the plain model with no adaptor left."""
    from mirror import MIRROR

    from fixtures_models import build_deltas
    from kepitfalls.data.pitfalls import BENCHMARK
    from kepitfalls.suites import conflict, round as round_suite

    if not (MIRROR / BENCHMARK).is_dir():
        pytest.skip(f"no benchmark mirror at {MIRROR}")
    module, config = {
        "conflict": (conflict, conflict.Config(benchmark=BENCHMARK, model_folder="GPT-J", kinds=["reverse", "composite"],
                                               subset_size=1, seed=0, known_only=False)),
        "round": (round_suite, round_suite.Config(benchmark=BENCHMARK, model_folder="GPT-J", kinds=["easy"], subset_size=1,
                                                  seed=0, known_only=False)),
    }[suite]
    lm = build_tiny("tiny-gptj")
    items = module.select(lm, MIRROR, config)
    cases = module.edit_cases(items)
    assert any(case.base is not None for case in cases)
    deltas = build_deltas(lm, cases, grace(EPS["tiny-gptj"], n_iter=2))
    before = snapshot(lm.model)
    metrics = module.evaluate(lm, items, deltas, module.pre_scores(lm, items)).metrics
    assert metrics and all(v == v for v in metrics.values())  # every metric computed, none NaN
    assert changed_tensors(lm.model, before) == set() and no_adaptor_left(lm)
