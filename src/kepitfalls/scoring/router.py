"""The one way a memory-based delta changes what the model answers: the prompt is rewritten before scoring.

A `MemoryDelta` only pushes its entries onto `model.kepitfalls_memory` (`deltas/codecs.py`). Each scoring
primitive passes its prompts through `route` first: with an empty memory they come back unchanged (the very
same list, so scoring is bit-identical to the unedited model), otherwise the `Router` installed on the model
rewrites each prompt (demonstrations and facts prepended, the matched edit prepended, or nothing where a
prompt is out of scope). The router is the method's own (`EditMethod.router`), installed for the duration of
an evaluation by `installed`; nothing here, in `suites/` or in `metrics/` knows which method it is.

The router counts, per primitive, the prompts it saw under a non-empty memory and the prompts it rewrote;
`routing_metrics` turns them into flat metrics (`routing_<primitive>_seen`, `routing_<primitive>_routed`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from torch import nn

from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE

ROUTER_ATTRIBUTE = "kepitfalls_router"


class Router(ABC):
    """A method's routing logic over the memory entries currently applied (oldest delta first)."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.routed: Counter[str] = Counter()

    @abstractmethod
    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        """Per prompt, the text to score in its place, or None where the memory leaves it alone."""


class NoRouterError(RuntimeError):
    """A memory delta is applied but no router is installed to read it: its edit would silently be ignored."""


def route(model: nn.Module, prompts: Sequence[str], primitive: str) -> Sequence[str]:
    """The prompts a primitive should score: unchanged (the same object) when no memory is applied."""
    memory = getattr(model, MEMORY_ATTRIBUTE, None)
    if not memory:
        return prompts
    router: Router | None = getattr(model, ROUTER_ATTRIBUTE, None)
    if router is None:
        methods = sorted({getattr(delta, "method", "?") for delta in memory})
        raise NoRouterError(f"memory deltas of {', '.join(methods)} are applied but no router is installed (scoring.router.installed)")
    rewritten = router.rewrite(memory, prompts)
    if len(rewritten) != len(prompts):
        raise ValueError(f"router rewrote {len(prompts)} prompts into {len(rewritten)}")
    router.seen[primitive] += len(prompts)
    router.routed[primitive] += sum(text is not None for text in rewritten)
    return [prompt if text is None else text for prompt, text in zip(prompts, rewritten)]


@contextmanager
def installed(model: nn.Module, router: Router | None) -> Iterator[Router | None]:
    """The model with `router` reading its memory (nothing to do for None); removed on exit."""
    if router is None:
        yield None
        return
    if getattr(model, ROUTER_ATTRIBUTE, None) is not None:
        raise RuntimeError("a router is already installed on this model")
    setattr(model, ROUTER_ATTRIBUTE, router)
    try:
        yield router
    finally:
        delattr(model, ROUTER_ATTRIBUTE)


def routing_metrics(router: Router | None) -> dict[str, float]:
    """Flat routing counts per primitive (empty without a router)."""
    if router is None:
        return {}
    metrics: dict[str, float] = {}
    for primitive in sorted(router.seen):
        metrics[f"routing_{primitive}_seen"] = float(router.seen[primitive])
        metrics[f"routing_{primitive}_routed"] = float(router.routed[primitive])
    return metrics
