"""The scoring primitives (METRICS.md §1) against a plain, unbatched, token-by-token reference loop."""

from __future__ import annotations

import math

import pytest
import torch

from fixtures_models import single_thread, tiny_gpt2_lm, tiny_gptj_lm, tiny_llama_lm, tiny_lm  # noqa: F401
from kepitfalls.metrics.locality import loc_agree
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring import primitives as P

# Prompts of different lengths in one batch (right padding), targets of one and several tokens.
PROMPTS = [
    "The Eiffel Tower is located in",
    "Rome",
    "Danielle Darrieux was a French actress whose mother tongue was",
    "Question: who wrote Hamlet? Answer:",
]
TARGETS = ["Paris, the capital of France", "Italy", "French", "William Shakespeare"]


def _adds_bos(lm: LoadedModel) -> bool:
    return lm.name == "tiny-llama"


def ref_prompt_ids(lm: LoadedModel, prompt: str) -> list[int]:
    """Prompt ids built by hand: BOS (Llama only) followed by the bare text's tokens."""
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([lm.tokenizer.bos_token_id] if _adds_bos(lm) else []) + ids


def ref_target_ids(lm: LoadedModel, target: str) -> list[int]:
    return lm.tokenizer(" " + target, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def ref_teacher_forced(lm: LoadedModel, prompt: str, target: str) -> tuple[list[int], list[float], list[int]]:
    """For each target token j: feed prompt + target[:j] alone, read log_softmax at the last position."""
    prefix, answer = ref_prompt_ids(lm, prompt), ref_target_ids(lm, target)
    logprobs, argmaxes = [], []
    for j in range(len(answer)):
        logits = lm.model(torch.tensor([prefix + answer[:j]])).logits[0, -1]
        row = torch.log_softmax(logits.double(), dim=-1)
        logprobs.append(float(row[answer[j]]))
        argmaxes.append(int(row.argmax()))
    return answer, logprobs, argmaxes


@torch.no_grad()
def ref_greedy(lm: LoadedModel, prompt: str, max_new_tokens: int) -> list[int]:
    ids = ref_prompt_ids(lm, prompt)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(lm.model(torch.tensor([ids + new])).logits[0, -1].argmax())
        new.append(token)
        if token == lm.tokenizer.eos_token_id:
            break
    return new


def test_reference_targets_span_several_tokens(tiny_lm: LoadedModel) -> None:
    """The test data really exercises multi-token targets and different prompt lengths."""
    lengths = [len(ref_target_ids(tiny_lm, t)) for t in TARGETS]
    assert max(lengths) >= 4 and sum(n > 1 for n in lengths) >= 3
    assert len({len(ref_prompt_ids(tiny_lm, p)) for p in PROMPTS}) == len(PROMPTS)


def test_prompt_ids_bos_handling(tiny_gptj_lm: LoadedModel, tiny_llama_lm: LoadedModel) -> None:
    gptj_ids = P.prompt_ids(tiny_gptj_lm.tokenizer, PROMPTS[0])
    llama_ids = P.prompt_ids(tiny_llama_lm.tokenizer, PROMPTS[0])
    bos = tiny_llama_lm.tokenizer.bos_token_id
    assert gptj_ids[0] != bos and bos not in gptj_ids
    assert llama_ids[0] == bos and llama_ids[1:] == gptj_ids  # same BPE, plus BOS
    assert llama_ids == ref_prompt_ids(tiny_llama_lm, PROMPTS[0])


def test_target_ids_have_leading_space_and_no_special_tokens(tiny_lm: LoadedModel) -> None:
    tok = tiny_lm.tokenizer
    ids = P.target_ids(tok, "Paris")
    assert ids == tok(" Paris", add_special_tokens=False)["input_ids"]
    assert ids != tok("Paris", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == " Paris"
    assert tok.bos_token_id not in ids
    assert P.target_ids(tok, " Paris") == ids  # an existing leading space is not doubled


def test_empty_target_is_rejected(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError):
        P.target_ids(tiny_gptj_lm.tokenizer, "")


def test_teacher_forced_matches_unbatched_reference(tiny_lm: LoadedModel) -> None:
    results = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    assert len(results) == len(PROMPTS)
    for prompt, target, result in zip(PROMPTS, TARGETS, results):
        answer, logprobs, argmaxes = ref_teacher_forced(tiny_lm, prompt, target)
        assert result.target_ids == answer
        assert result.token_logprobs == pytest.approx(logprobs, abs=2e-5)
        assert result.argmax_ids == argmaxes


def test_teacher_forced_independent_of_batching(tiny_lm: LoadedModel) -> None:
    whole = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    for batch_size in (1, 3):
        split = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS, batch_size=batch_size)
        for a, b in zip(whole, split):
            assert a.target_ids == b.target_ids and a.argmax_ids == b.argmax_ids
            assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=2e-5)


def test_teacher_forced_length_mismatch(tiny_lm: LoadedModel) -> None:
    with pytest.raises(ValueError):
        P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS[:-1])


def test_mean_target_prob_is_geometric_mean(tiny_lm: LoadedModel) -> None:
    probs = P.mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    for prompt, target, p in zip(PROMPTS, TARGETS, probs):
        _, logprobs, _ = ref_teacher_forced(tiny_lm, prompt, target)
        geometric = math.exp(sum(logprobs) / len(logprobs))
        assert p == pytest.approx(geometric, rel=1e-4)
        if len(logprobs) > 1:
            joint, first = math.exp(sum(logprobs)), math.exp(logprobs[0])
            assert abs(p - joint) > 1e-3 * geometric
            assert abs(p - first) > 1e-3 * geometric


def test_mean_target_prob_uses_spaced_target(tiny_lm: LoadedModel) -> None:
    """"Paris" is scored as " Paris"; scoring the unspaced ids would give a different number."""
    [p] = P.mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, [PROMPTS[0]], ["Paris"])
    _, spaced, _ = ref_teacher_forced(tiny_lm, PROMPTS[0], "Paris")
    assert p == pytest.approx(math.exp(sum(spaced) / len(spaced)), rel=1e-4)
    prefix = ref_prompt_ids(tiny_lm, PROMPTS[0])
    bare = tiny_lm.tokenizer("Paris", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        unspaced = [
            float(torch.log_softmax(tiny_lm.model(torch.tensor([prefix + bare[:j]])).logits[0, -1].double(), -1)[bare[j]])
            for j in range(len(bare))
        ]
    assert abs(p - math.exp(sum(unspaced) / len(unspaced))) > 1e-3 * p


def test_token_accuracy_matches_reference(tiny_lm: LoadedModel) -> None:
    accs = P.token_accuracy(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    for prompt, target, acc in zip(PROMPTS, TARGETS, accs):
        answer, _, argmaxes = ref_teacher_forced(tiny_lm, prompt, target)
        assert acc == sum(a == t for a, t in zip(argmaxes, answer)) / len(answer)


def test_teacher_forced_properties_arithmetic() -> None:
    """P̄, mean NLL and TokAcc of a hand-made result: 2 of 3 argmax hits gives 0.667 (METRICS.md §1.2)."""
    tf = P.TeacherForced(target_ids=[5, 6, 7], token_logprobs=[-1.0, -2.0, -3.0], argmax_ids=[5, 6, 9])
    assert tf.token_accuracy == pytest.approx(2 / 3)
    assert tf.mean_prob == pytest.approx(math.exp(-2.0))  # not exp(-6), not exp(-1)
    assert tf.mean_nll == pytest.approx(2.0)


def test_llama_positions_with_bos(tiny_llama_lm: LoadedModel) -> None:
    """With BOS the prediction of target token j is still read at len(prompt ids incl. BOS) + j - 1."""
    lm = tiny_llama_lm
    [result] = P.teacher_forced(lm.model, lm.tokenizer, [PROMPTS[2]], [TARGETS[0]])
    prefix = P.prompt_ids(lm.tokenizer, PROMPTS[2])
    assert prefix[0] == lm.tokenizer.bos_token_id
    answer = result.target_ids
    with torch.no_grad():
        logits = lm.model(torch.tensor([prefix + answer])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    expected = [float(logprobs[len(prefix) - 1 + j, answer[j]]) for j in range(len(answer))]
    shifted = [float(logprobs[len(prefix) + j, answer[j]]) for j in range(len(answer) - 1)]
    assert result.token_logprobs == pytest.approx(expected, abs=2e-5)
    assert result.token_logprobs[:-1] != pytest.approx(shifted, abs=1e-3)


def test_next_token_logprobs_matches_reference(tiny_lm: LoadedModel) -> None:
    rows = P.next_token_logprobs(tiny_lm.model, tiny_lm.tokenizer, PROMPTS)
    assert rows.shape == (len(PROMPTS), len(tiny_lm.tokenizer))
    for prompt, row in zip(PROMPTS, rows):
        with torch.no_grad():
            logits = tiny_lm.model(torch.tensor([ref_prompt_ids(tiny_lm, prompt)])).logits[0, -1]
        expected = torch.log_softmax(logits.float(), dim=-1)
        torch.testing.assert_close(row, expected, atol=2e-5, rtol=0)
        assert float(row.exp().sum()) == pytest.approx(1.0, abs=1e-4)
    split = P.next_token_logprobs(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, batch_size=3)
    torch.testing.assert_close(split, rows, atol=2e-5, rtol=0)


def test_greedy_generate_matches_unbatched_loop(tiny_lm: LoadedModel) -> None:
    max_new = 6
    texts = P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, max_new_tokens=max_new)
    assert len(texts) == len(PROMPTS)
    for prompt, text in zip(PROMPTS, texts):
        new_ids = ref_greedy(tiny_lm, prompt, max_new)
        assert text == tiny_lm.tokenizer.decode(new_ids, skip_special_tokens=True)
        assert not text.startswith(prompt)  # new text only, never the prompt
    again = P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, max_new_tokens=max_new, batch_size=1)
    assert again == texts


def test_greedy_generate_returns_only_new_text(tiny_lm: LoadedModel) -> None:
    """Decoding exactly the new tokens: the prompt's text plus the output re-encodes to prompt + new ids."""
    prompt = PROMPTS[0]
    [text] = P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, [prompt], max_new_tokens=4)
    new_ids = ref_greedy(tiny_lm, prompt, 4)
    full = tiny_lm.tokenizer.decode(ref_prompt_ids(tiny_lm, prompt) + new_ids, skip_special_tokens=True)
    assert full == prompt + text


def test_loc_agree_of_teacher_forced_runs(tiny_lm: LoadedModel) -> None:
    """LocAgree of a model with itself is 1; after a weight change it reflects the changed argmaxes."""
    before = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    assert all(loc_agree(r.argmax_ids, r.argmax_ids) == 1.0 for r in before)
    with torch.no_grad():
        tiny_lm.model.get_submodule("lm_head").weight.mul_(-1.0)
    after = P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS)
    for a, b in zip(before, after):
        expected = sum(x == y for x, y in zip(a.argmax_ids, b.argmax_ids)) / len(a.argmax_ids)
        assert loc_agree(a.argmax_ids, b.argmax_ids) == expected
    assert any(loc_agree(a.argmax_ids, b.argmax_ids) < 1.0 for a, b in zip(before, after))


@pytest.mark.parametrize("name", ["tiny_gptj_lm", "tiny_llama_lm", "tiny_gpt2_lm"])
def test_score_prompts_continues_several_targets_from_one_prompt_pass(name: str, request: pytest.FixtureRequest) -> None:
    """Targets of one, two and several tokens continue from each prompt's cached keys and values (right
    padding, distinct prompt lengths); every result and next-token distribution equals the unbatched loop's."""
    lm = request.getfixturevalue(name)
    targets = [(target, "Italy", "Rome and Milan") for target in TARGETS]
    scored = P.score_prompts(lm.model, lm.tokenizer, PROMPTS, targets)
    for prompt, prompt_targets, result in zip(PROMPTS, targets, scored):
        assert len(result.forced) == len(prompt_targets)
        for target, forced in zip(prompt_targets, result.forced):
            answer, logprobs, argmaxes = ref_teacher_forced(lm, prompt, target)
            assert forced.target_ids == answer and forced.argmax_ids == argmaxes
            assert forced.token_logprobs == pytest.approx(logprobs, abs=2e-5)
        with torch.no_grad():
            logits = lm.model(torch.tensor([ref_prompt_ids(lm, prompt)])).logits[0, -1]
        torch.testing.assert_close(result.next_token, torch.log_softmax(logits.float(), dim=-1), atol=2e-5, rtol=0)
