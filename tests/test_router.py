"""The memory router: a memory delta changes what every scoring primitive sees, and revert removes it exactly."""

from __future__ import annotations

from typing import Any, Sequence

import pytest
import torch

from fixtures_models import build_tiny, single_thread, tiny_lm  # noqa: F401
from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE, MemoryDelta
from kepitfalls.general.generation import greedy
from kepitfalls.metrics.records import diagnostic_metrics
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring import primitives as P
from kepitfalls.scoring.router import ROUTER_ATTRIBUTE, NoRouterError, PrefixCachedModel, Router, in_order, installed, route, routing_metrics

PROMPTS = ["The Eiffel Tower is located in", "Danielle Darrieux's mother tongue is"]
TARGETS = ["Rome", "English"]


class PrefixRouter(Router):
    """Prepends every applied entry's text, oldest first, to prompts that mention 'Eiffel'."""

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        prefix = "".join(entry["text"] for delta in memory for entry in delta.entries)
        return [prefix + p if "Eiffel" in p else None for p in prompts]


def _delta(text: str) -> MemoryDelta:
    return MemoryDelta("TEST", [{"text": text}])


def _scores(lm: LoadedModel, prompts: Sequence[str]) -> tuple[list[P.TeacherForced], torch.Tensor, list[str]]:
    return (
        P.teacher_forced(lm.model, lm.tokenizer, prompts, TARGETS),
        P.next_token_logprobs(lm.model, lm.tokenizer, prompts),
        P.greedy_generate(lm.model, lm.tokenizer, prompts, max_new_tokens=3),
    )


def test_empty_memory_leaves_prompts_as_they_are(tiny_lm: LoadedModel) -> None:
    (group,) = route(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, "teacher_forced")
    assert group.model is tiny_lm.model and group.prompts is PROMPTS and list(group.positions) == [0, 1]
    with installed(tiny_lm.model, PrefixRouter()):
        (group,) = route(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, "teacher_forced")
        assert group.model is tiny_lm.model and group.prompts is PROMPTS


def test_every_primitive_scores_the_rewritten_prompt(tiny_lm: LoadedModel) -> None:
    fact = "New Fact: The Eiffel Tower is in Rome.\n"
    expected_prompts = [fact + PROMPTS[0], PROMPTS[1]]
    expected = _scores(tiny_lm, expected_prompts)
    plain = _scores(tiny_lm, PROMPTS)
    delta = _delta(fact)
    with installed(tiny_lm.model, PrefixRouter()) as router:
        delta.apply(tiny_lm.model)
        try:
            routed = _scores(tiny_lm, PROMPTS)
        finally:
            delta.revert(tiny_lm.model)
    assert routed[0] == expected[0] and routed[0] != plain[0]
    assert torch.equal(routed[1], expected[1])
    assert routed[2] == expected[2]
    assert routing_metrics(router) == {
        "routing_generate_routed": 1.0, "routing_generate_seen": 2.0,
        "routing_next_token_routed": 1.0, "routing_next_token_seen": 2.0,
        "routing_teacher_forced_routed": 1.0, "routing_teacher_forced_seen": 2.0,
    }


class ScorerRouter(PrefixRouter):
    """PrefixRouter whose rewritten prompts another model scores."""

    def __init__(self, other: torch.nn.Module) -> None:
        super().__init__()
        self.other = other

    def scorer(self, model: torch.nn.Module) -> torch.nn.Module | None:
        return self.other


def test_a_router_naming_a_scorer_sends_it_the_rewritten_prompts_and_keeps_the_others_bit_identical(tiny_lm: LoadedModel) -> None:
    other = build_tiny(tiny_lm.name, seed=1)
    fact = "New Fact: The Eiffel Tower is in Rome.\n"
    prompts = [PROMPTS[1], PROMPTS[0], "The Eiffel Tower's height is"]
    targets = [TARGETS[1], TARGETS[0], "tall"]

    def scores(lm: LoadedModel, asked: list[str], wanted: list[str]) -> tuple:
        return (P.teacher_forced(lm.model, lm.tokenizer, asked, wanted), P.next_token_logprobs(lm.model, lm.tokenizer, asked),
                P.greedy_generate(lm.model, lm.tokenizer, asked, max_new_tokens=3), greedy(lm, asked, 3, 2))

    plain, direct = scores(tiny_lm, prompts, targets), scores(other, [fact + prompts[1], fact + prompts[2]], targets[1:])
    delta = _delta(fact)
    with installed(tiny_lm.model, ScorerRouter(other.model)):
        delta.apply(tiny_lm.model)
        try:
            groups = route(tiny_lm.model, tiny_lm.tokenizer, prompts, "teacher_forced")
            routed = scores(tiny_lm, prompts, targets)
        finally:
            delta.revert(tiny_lm.model)
    assert [(g.model, list(g.positions), list(g.prompts)) for g in groups] == [
        (tiny_lm.model, [0, 1, 2], prompts), (other.model, [1, 2], [fact + prompts[1], fact + prompts[2]])]
    assert routed[0][0] == plain[0][0] and routed[0][1:] == direct[0] and routed[0][1:] != plain[0][1:]
    assert torch.equal(routed[1][0], plain[1][0]) and torch.equal(routed[1][1:], direct[1])
    assert routed[2][0] == plain[2][0] and routed[2][1:] == direct[2]
    assert routed[3][0] == plain[3][0] and [g.new for g in routed[3][1:]] == [g.new for g in direct[3]]
    assert routed[3][1].full.endswith(routed[3][1].new) and fact not in routed[3][1].full  # shows the prompt as asked
    with pytest.raises(ValueError, match="1 results for 2 routed prompts"):
        in_order(groups, [["a", "b", "c"], ["d"]])


def test_revert_leaves_no_router_and_bit_identical_scores(tiny_lm: LoadedModel) -> None:
    before = _scores(tiny_lm, PROMPTS)
    first, second = _delta("A. "), _delta("B. ")
    with installed(tiny_lm.model, PrefixRouter()):
        first.apply(tiny_lm.model)
        second.apply(tiny_lm.model)
        assert route(tiny_lm.model, tiny_lm.tokenizer, PROMPTS[:1], "teacher_forced")[0].prompts == ["A. B. " + PROMPTS[0]]  # oldest first
        second.revert(tiny_lm.model)
        first.revert(tiny_lm.model)
    assert not getattr(tiny_lm.model, MEMORY_ATTRIBUTE)
    assert not hasattr(tiny_lm.model, ROUTER_ATTRIBUTE)
    after = _scores(tiny_lm, PROMPTS)
    assert after[0] == before[0] and torch.equal(after[1], before[1]) and after[2] == before[2]


def test_a_memory_without_router_is_an_error_naming_method_and_stage(tiny_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_STAGE", "cell@TEST-counterfact")
    delta = _delta("x")
    with pytest.raises(NoRouterError, match="TEST.*cell@TEST-counterfact"):
        delta.apply(tiny_lm.model)  # applying: refused
    with installed(tiny_lm.model, PrefixRouter()):
        delta.apply(tiny_lm.model)
    try:  # the router gone while the memory stays: scoring refuses
        for score in (lambda: P.teacher_forced(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, TARGETS),
                      lambda: P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, max_new_tokens=2)):
            with pytest.raises(NoRouterError, match="TEST.*cell@TEST-counterfact"):
                score()
    finally:
        delta.revert(tiny_lm.model)


def test_a_second_router_is_refused(tiny_lm: LoadedModel) -> None:
    with installed(tiny_lm.model, PrefixRouter()):
        with pytest.raises(RuntimeError, match="already installed"):
            with installed(tiny_lm.model, PrefixRouter()):
                pass
    assert not hasattr(tiny_lm.model, ROUTER_ATTRIBUTE)


class SharedPrefixRouter(PrefixRouter):
    """PrefixRouter whose prefix is declared shared, so forward passes reuse its keys and values."""

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        prefix = "".join(entry["text"] for delta in memory for entry in delta.entries)
        return [prefix + p for p in prompts]

    def shared_prefix(self, memory: Sequence[Any]) -> str | None:
        return "".join(entry["text"] for delta in memory for entry in delta.entries)


@pytest.mark.parametrize(("fact", "boundary_kept"), [("Demonstration one. Demonstration two.\n\nNew Fact:", True), ("The Eiffel Tow", False)])
def test_a_cached_prefix_gives_the_uncached_scores(tiny_lm: LoadedModel, fact: str, boundary_kept: bool) -> None:
    """Whether the prefix's tokens survive in every row ("...New Fact:" + " The") or not ("Tow" + "er" is
    one token: the plain pass runs), the scores are the uncached ones."""
    prompts = ["er is located in", "ers of Danielle Darrieux's mother tongue is a very long prompt, which is"]
    expected = _scores(tiny_lm, [fact + p for p in prompts])
    delta = _delta(fact)
    with installed(tiny_lm.model, SharedPrefixRouter()):
        delta.apply(tiny_lm.model)
        try:
            (group,) = route(tiny_lm.model, tiny_lm.tokenizer, prompts, "teacher_forced")
            runner = group.model
            routed = _scores(tiny_lm, prompts)
        finally:
            delta.revert(tiny_lm.model)
    assert isinstance(runner, PrefixCachedModel)
    full = tiny_lm.tokenizer(fact + prompts[0])["input_ids"]
    assert (full[: len(runner.prefix)] == runner.prefix.tolist()) == boundary_kept  # whether the cached path ran
    for got, want in zip(routed[0], expected[0]):
        assert got.argmax_ids == want.argmax_ids
        assert got.token_logprobs == pytest.approx(want.token_logprobs, abs=1e-4)
    assert torch.allclose(routed[1], expected[1], atol=1e-4)
    assert routed[2] == expected[2]


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_prefix_cached_model_matches_the_plain_call(tiny_lm: LoadedModel, keep: int) -> None:
    """Every form of logits_to_keep (all, the last few positions) gives the plain call's logits."""
    prefix = tiny_lm.tokenizer("Demonstration one.\n\nNew Fact:")["input_ids"]
    rest = tiny_lm.tokenizer(" The Eiffel Tower is in Rome", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix + rest, prefix + rest])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        plain = tiny_lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        cached = PrefixCachedModel(tiny_lm.model, prefix)(ids, mask, logits_to_keep=keep).logits
    assert cached.shape == plain.shape
    assert torch.allclose(cached, plain, atol=1e-4)


@pytest.mark.parametrize("router_class", [PrefixRouter, SharedPrefixRouter])
def test_score_prompts_is_routed_once_and_matches_the_rewritten_prompts(tiny_lm: LoadedModel, router_class: type[Router]) -> None:
    """CounterFact's one call: every prompt rewritten once (its own `score_prompts` count), targets continuing
    from the (possibly prefix-cached) prompt pass give the scores of the rewritten prompts scored plainly."""
    fact = "Demonstration one. Demonstration two.\n\nNew Fact:"
    targets = [("Rome and Paris", "English"), ("French is spoken", "Rome")]
    rewritten = router_class().rewrite([_delta(fact)], PROMPTS)
    expected = P.score_prompts(tiny_lm.model, tiny_lm.tokenizer, [p if r is None else r for p, r in zip(PROMPTS, rewritten)], targets)
    delta = _delta(fact)
    with installed(tiny_lm.model, router_class()) as router:
        delta.apply(tiny_lm.model)
        try:
            routed = P.score_prompts(tiny_lm.model, tiny_lm.tokenizer, PROMPTS, targets)
        finally:
            delta.revert(tiny_lm.model)
    routed_count = float(sum(r is not None for r in rewritten))
    assert routing_metrics(router) == {"routing_score_prompts_routed": routed_count, "routing_score_prompts_seen": 2.0}
    for got, want in zip(routed, expected):
        for g, w in zip(got.forced, want.forced):
            assert g.argmax_ids == w.argmax_ids and g.token_logprobs == pytest.approx(w.token_logprobs, abs=1e-4)
        assert torch.allclose(got.next_token, want.next_token, atol=1e-4)


def test_greedy_generation_from_the_cached_prefix_gives_the_uncached_generations(tiny_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left-padded batches of routed prompts of different lengths continue from the prefix's keys and values
    (the cached path runs: `generate` gets a cache) and generate what the whole texts generate."""
    fact = "Demonstration one. Demonstration two.\n\nNew Fact:"
    prompts = [" The Eiffel Tower is located in", " Danielle Darrieux's mother tongue, a much longer prompt, is", " Paris"]
    expected_primitive = P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, [fact + p for p in prompts], max_new_tokens=6)
    expected_tasks = greedy(tiny_lm, [fact + p for p in prompts], 6, batch_size=3)
    caches = []
    plain_generate = type(tiny_lm.model).generate

    def spy(model: Any, *args: Any, **kwargs: Any) -> Any:
        caches.append(kwargs.get("past_key_values"))
        return plain_generate(model, *args, **kwargs)

    monkeypatch.setattr(type(tiny_lm.model), "generate", spy)
    delta = _delta(fact)
    with installed(tiny_lm.model, SharedPrefixRouter()):
        delta.apply(tiny_lm.model)
        try:
            routed_primitive = P.greedy_generate(tiny_lm.model, tiny_lm.tokenizer, prompts, max_new_tokens=6)
            routed_tasks = greedy(tiny_lm, prompts, 6, batch_size=3)
        finally:
            delta.revert(tiny_lm.model)
    assert len(caches) == 2 and all(cache is not None for cache in caches)  # both ran from the cached prefix
    assert routed_primitive == expected_primitive
    assert [g.new for g in routed_tasks] == [g.new for g in expected_tasks]
    assert [g.full for g in routed_tasks] == [g.full.replace(fact, "", 1) for g in expected_tasks]  # the task prompt shown


def test_the_installed_router_counts_the_routed_prompts_of_each_prompt_set(tiny_lm: LoadedModel) -> None:
    """What every suite's per-set diagnostics (and each Figure-4 checkpoint's per-task ones) get: `routed_<set>`,
    100 for a prompt the memory takes, 0 for one it leaves alone; nothing without a memory or a router."""
    sets = {"rewrite": [PROMPTS[0]], "paraphrase": ["The Eiffel Tower stands in", PROMPTS[1]], "neighborhood": [PROMPTS[1], "Paris is in"]}
    assert prompt_diagnostics(tiny_lm, sets) == {}
    delta = _delta("New Fact: The Eiffel Tower is in Rome.\n")
    with installed(tiny_lm.model, PrefixRouter()) as router:
        assert prompt_diagnostics(tiny_lm, sets) == {}  # empty memory: the unedited model's numbers, no rows
        delta.apply(tiny_lm.model)
        try:
            found = [prompt_diagnostics(tiny_lm, sets), prompt_diagnostics(tiny_lm, {"rewrite": [PROMPTS[1]], "paraphrase": [PROMPTS[0]]})]
        finally:
            delta.revert(tiny_lm.model)
    assert found[0] == {"routed_rewrite": [100.0], "routed_paraphrase": [100.0, 0.0], "routed_neighborhood": [0.0, 0.0]}
    assert diagnostic_metrics(found) == {"routed_rewrite": 50.0, "routed_paraphrase": 75.0, "routed_neighborhood": 0.0}
    assert routing_metrics(router) == {}  # the diagnostics are not scoring: the per-primitive counts stay untouched
