"""The benchmark's sequence count (`sequence_count.counting`): every scoring primitive counted, once per sequence."""

from __future__ import annotations

import inspect
import sys

from fixtures_models import single_thread, tiny_llama_lm  # noqa: F401
from kepitfalls.data.piqa import PiqaRecord
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring import primitives
from kepitfalls.sequence_count import DERIVED, SEQUENCES, counting
from kepitfalls.suites import locality

PROMPTS = ["The Eiffel Tower is located in", "Rome", "Question: who wrote Hamlet? Answer:"]


def test_each_primitive_counts_its_sequences(tiny_llama_lm: LoadedModel) -> None:
    model, tokenizer = tiny_llama_lm.model, tiny_llama_lm.tokenizer
    piqa = [PiqaRecord(0, "Open a jar", "twist the lid", "hit it", 0), PiqaRecord(1, "Boil water", "heat it", "cool it", 0)]
    with counting() as counts:
        primitives.teacher_forced(model, tokenizer, PROMPTS, ["Paris", "Italy", "Shakespeare"], batch_size=2)
        primitives.score_prompts(model, tokenizer, PROMPTS, [("Paris", "France"), ("Italy",), ()])
        primitives.next_token_logprobs(model, tokenizer, prompts=PROMPTS[:2])
        primitives.greedy_generate(model, tokenizer, PROMPTS[:2], max_new_tokens=3)
        after_primitives = dict(counts)
        locality._piqa_logliks(tiny_llama_lm, piqa)  # multiple choice, through the name the suite bound
        primitives.mean_target_prob(model, tokenizer, PROMPTS[:2], ["Paris", "Italy"])  # built on teacher_forced
    assert after_primitives == {"teacher_forced": 3, "score_prompts": 3 + 3, "next_token_logprobs": 2, "greedy_generate": 2}
    assert counts == {"teacher_forced": 3 + 4 + 2, "score_prompts": 6, "next_token_logprobs": 2, "greedy_generate": 2}


def test_every_public_primitive_is_counted() -> None:
    """A new public primitive must say how many sequences it scores (or be built on one that does)."""
    public = {name for name, f in vars(primitives).items()
              if inspect.isfunction(f) and f.__module__ == primitives.__name__ and not name.startswith("_")}
    assert public == set(SEQUENCES) | set(DERIVED)


def test_every_bound_primitive_is_patched_then_restored() -> None:
    originals = {name: getattr(primitives, name) for name in SEQUENCES}

    def bound() -> list[tuple[str, str]]:
        return [(key, name) for key, m in list(sys.modules.items()) if key.startswith("kepitfalls.")
                for name in SEQUENCES if vars(m).get(name) is originals[name]]

    with counting():
        assert bound() == []
        assert {key for key, m in sys.modules.items() if key.startswith("kepitfalls.suites.") and "teacher_forced" in vars(m)} >= {
            "kepitfalls.suites.common", "kepitfalls.suites.locality", "kepitfalls.suites.portability"}
    assert ("kepitfalls.suites.counterfact", "score_prompts") in bound()
