"""Count the sequences the public scoring primitives score, for `scripts/bench.py`'s seconds per sequence.

A scored sequence is one teacher-forced (prompt, target) pair, one next-token distribution or one greedy
generation, whichever primitive computes it and however it batches: `teacher_forced` scores one pair per
prompt (a multiple-choice item is one pair per option), `score_prompts` every target of every prompt and the
next-token distribution after each prompt, `next_token_logprobs` one distribution and `greedy_generate` one
generation per prompt. Only outermost calls count, so a primitive built on another is counted once.
No stage imports this module: it measures the code, it computes no result.
"""

from __future__ import annotations

import inspect
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kepitfalls.scoring import primitives
from kepitfalls.suites import SUPPORTED, suite_module

#: Public primitive -> the sequences one call scores, from its bound arguments.
SEQUENCES: dict[str, Callable[[dict[str, Any]], int]] = {
    "teacher_forced": lambda call: len(call["prompts"]),
    "score_prompts": lambda call: len(call["prompts"]) + sum(len(targets) for targets in call["targets"]),
    "next_token_logprobs": lambda call: len(call["prompts"]),
    "greedy_generate": lambda call: len(call["prompts"]),
}
#: Public primitives that only summarise another one's results (counted through the one they call).
DERIVED = ("mean_target_prob", "token_accuracy")


def _counted(name: str, function: Callable[..., Any], counts: Counter[str], depth: list[int]) -> Callable[..., Any]:
    signature = inspect.signature(function)

    def counted(*args: Any, **kwargs: Any) -> Any:
        if depth[0] == 0:
            counts[name] += SEQUENCES[name](signature.bind(*args, **kwargs).arguments)
        depth[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1

    return counted


@contextmanager
def counting() -> Iterator[Counter[str]]:
    """Sequences scored inside the block, by primitive: every loaded package module that bound a primitive
    (`from kepitfalls.scoring.primitives import ...`, every suite loaded first) calls the counted one."""
    for suite in SUPPORTED:
        suite_module(suite)
    originals = {name: getattr(primitives, name) for name in SEQUENCES}
    counts: Counter[str] = Counter()
    depth = [0]
    wrapped = {name: _counted(name, function, counts, depth) for name, function in originals.items()}
    modules = [m for key, m in list(sys.modules.items()) if key == "kepitfalls" or key.startswith("kepitfalls.")]
    patched = [(m, name) for m in modules for name in SEQUENCES if vars(m).get(name) is originals[name]]
    try:
        for module, name in patched:
            setattr(module, name, wrapped[name])
        yield counts
    finally:
        for module, name in patched:
            setattr(module, name, originals[name])
