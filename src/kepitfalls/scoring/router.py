"""The one way a memory-based delta changes what the model answers: the prompt is rewritten before scoring.

A `MemoryDelta` only pushes its entries onto `model.kepitfalls_memory` (`deltas/codecs.py`). Each scoring
primitive passes its prompts through `route` first: with an empty memory they come back unchanged (the very
same list, so scoring is bit-identical to the unedited model), otherwise the `Router` installed on the model
rewrites each prompt (demonstrations and facts prepended, the matched edit prepended, or nothing where a
prompt is out of scope). The router is the method's own (`EditMethod.router`), installed for the duration of
an evaluation by `installed`; nothing here, in `suites/` or in `metrics/` knows which method it is.

A router may also name the model that scores its rewritten prompts (`Router.scorer`; SERAC's fine-tuned
counterfactual model): `route` then hands back two groups, each with its prompts' positions: every prompt as
asked on the model itself, then the rewritten ones on the router's model, whose results replace those at
their positions (`in_order`). The model itself scores all the prompts, not only the ones left to it, so those
run in the very batches of an unedited run and keep its numbers to the last bit (a batch's size moves the
last bits of its rows' logits); the routed prompts' share of that pass is the price. A router that names none
gives one group, the model itself, in the callers' order, so its scores are what they were before routers
could name a model.

A router may also name a *shared prefix*, text that every rewritten prompt of the current memory starts
with (IKE's demonstrations). `route` then hands the primitives a `PrefixCachedModel`: the prefix's keys and
values are computed once per memory state and every batch whose rows all begin with the prefix's tokens runs
only the rest, in forward passes and in greedy generation alike (rows that do not are run whole, so a
tokenisation that merges across the boundary costs speed, never correctness).

Checks that an edit is never silently ignored: applying a memory delta on a model with no router installed,
or scoring with a memory applied and none, is a `NoRouterError` naming the method and the stage
(`deltas.codecs`).

The router counts, per primitive, the prompts it saw under a non-empty memory and the prompts it rewrote;
`routing_metrics` turns them into flat metrics (`routing_<primitive>_seen`, `routing_<primitive>_routed`).
While installed it is also a diagnosable component (`scoring.diagnostics`): under a non-empty memory it
reports, per prompt of every prompt set a suite or the Figure-4 run asks about, whether the memory takes it
(`routed`, 100 or 0), so the metrics say how many prompts of each set were routed.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
from torch import nn

from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE, ROUTER_ATTRIBUTE, NoRouterError, no_router_error
from kepitfalls.scoring.diagnostics import install, uninstall

__all__ = ["ROUTER_ATTRIBUTE", "NoRouterError", "PrefixCachedModel", "Routed", "Router", "in_order", "installed", "route", "routing_metrics"]

T = TypeVar("T")


class Router(ABC):
    """A method's routing logic over the memory entries currently applied (oldest delta first)."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.routed: Counter[str] = Counter()

    @abstractmethod
    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        """Per prompt, the text to score in its place, or None where the memory leaves it alone."""

    def diagnostics(self, lm: Any, prompts: Sequence[str]) -> dict[str, list[float]]:
        """Per prompt, whether the current memory takes it (100) or leaves it to the model (0); nothing under an
        empty memory. Not counted in `seen`/`routed`, which count what the primitives scored."""
        memory = getattr(lm.model, MEMORY_ATTRIBUTE, None)
        if not memory:
            return {}
        return {"routed": [0.0 if text is None else 100.0 for text in self.rewrite(memory, prompts)]}

    def scorer(self, model: nn.Module) -> nn.Module | None:
        """The model that scores the rewritten prompts in place of `model`; None: `model` itself."""
        return None

    def shared_prefix(self, memory: Sequence[Any]) -> str | None:
        """Text every rewritten prompt starts with under this memory, worth caching; None if there is none."""
        return None

    def cached(self, model: nn.Module, tokenizer: Any, prefix: str) -> "PrefixCachedModel":
        """The model with `prefix`'s keys and values computed once and kept while the prefix stays the same."""
        held = getattr(self, "_cached", None)
        if held is None or held[0] != prefix or held[1].model is not model:
            self._cached = (prefix, PrefixCachedModel(model, tokenizer(prefix)["input_ids"]))
        return self._cached[1]


class PrefixCachedModel:
    """A causal LM whose forward passes reuse the keys and values of a fixed text prefix.

    Stands in for the model in `model(input_ids=..., attention_mask=..., logits_to_keep=...)` calls with right
    padding; `logits` cover every position as the plain call would (the prefix's own logits computed once).
    `logits_to_keep` may be a count or a tensor of positions; other arguments (`use_cache`) pass through, and
    the returned `past_key_values` cover prefix and rest. A call that brings its own `past_key_values` (the
    targets continuing from a cached prompt pass, with their `position_ids`) runs on the model as it is.
    """

    def __init__(self, model: nn.Module, prefix_ids: list[int]) -> None:
        self.model = model
        self.prefix = torch.tensor(prefix_ids, device=model.device)
        with torch.inference_mode():
            out = model(input_ids=self.prefix[None], use_cache=True)
        self.cache = out.past_key_values
        self.prefix_logits = out.logits[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> Any:
        width = len(self.prefix)
        if kwargs.get("past_key_values") is not None:  # a continuation of a pass already made: its cache holds the prefix
            return self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kwargs)
        if input_ids.shape[1] <= width or not bool((input_ids[:, :width] == self.prefix).all()):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kwargs)
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(input_ids.shape[0])
        rest = input_ids[:, width:]
        if isinstance(logits_to_keep, torch.Tensor) and bool((logits_to_keep >= width).all()):
            return self.model(input_ids=rest, attention_mask=attention_mask, past_key_values=cache, logits_to_keep=logits_to_keep - width, **kwargs)
        if isinstance(logits_to_keep, int) and 0 < logits_to_keep <= rest.shape[1]:
            return self.model(input_ids=rest, attention_mask=attention_mask, past_key_values=cache, logits_to_keep=logits_to_keep, **kwargs)
        out = self.model(input_ids=rest, attention_mask=attention_mask, past_key_values=cache, **kwargs)
        logits = torch.cat([self.prefix_logits.expand(input_ids.shape[0], -1, -1), out.logits], dim=1)
        out.logits = logits[:, logits_to_keep] if isinstance(logits_to_keep, torch.Tensor) else logits[:, -logits_to_keep:] if logits_to_keep else logits
        return out

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        """`model.generate` on left-padded rows, continuing from the cached prefix.

        Each row's padding moves from before the prefix to just after it: every real token keeps its position
        (positions come from the attention mask) and what it attends to, and `generate` runs only what
        follows the prefix. The returned rows are as long as the plain call's, prompt part rearranged, so the
        new tokens sit where they would. A batch with a row that is not left padding then the prefix then at
        least one token runs whole.
        """
        width = len(self.prefix)
        pads = (attention_mask == 0).sum(dim=1).tolist()
        for row, pad in enumerate(pads):
            real = attention_mask[row, pad:]
            if input_ids.shape[1] - pad <= width or not bool(real.all()) or not bool((input_ids[row, pad : pad + width] == self.prefix).all()):
                return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        ids = torch.stack([torch.cat([self.prefix, input_ids[row, :pad], input_ids[row, pad + width :]]) for row, pad in enumerate(pads)])
        mask = torch.stack([torch.cat([torch.ones_like(self.prefix), attention_mask[row, :pad], attention_mask[row, pad + width :]]) for row, pad in enumerate(pads)])
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(input_ids.shape[0])
        return self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs)


@dataclass(frozen=True)
class Routed:
    """Prompts a primitive scores on one model: the model (or a `PrefixCachedModel` of it), the texts to score,
    and their positions in the caller's list."""

    model: Any
    positions: Sequence[int]
    prompts: Sequence[str]


def route(model: nn.Module, tokenizer: Any, prompts: Sequence[str], primitive: str) -> list[Routed]:
    """The groups of prompts a primitive should score, each on its model: one group, the model and the prompts
    unchanged (the same objects), when no memory is applied; one group on the model (a `PrefixCachedModel`
    where the router names a shared prefix) with the rewritten texts in place; or, where the router names a
    scorer of its own, every prompt as asked on the model (where any is left to it), then the rewritten ones
    on that scorer."""
    memory = getattr(model, MEMORY_ATTRIBUTE, None)
    if not memory:
        return [Routed(model, range(len(prompts)), prompts)]
    router: Router | None = getattr(model, ROUTER_ATTRIBUTE, None)
    if router is None:
        raise no_router_error(sorted({getattr(delta, "method", "?") for delta in memory}))
    rewritten = router.rewrite(memory, prompts)
    if len(rewritten) != len(prompts):
        raise ValueError(f"router rewrote {len(prompts)} prompts into {len(rewritten)}")
    router.seen[primitive] += len(prompts)
    router.routed[primitive] += sum(text is not None for text in rewritten)
    prefix = router.shared_prefix(memory)

    def runner(scorer: nn.Module) -> Any:
        return router.cached(scorer, tokenizer, prefix) if prefix else scorer

    other = router.scorer(model)
    if other is None:
        return [Routed(runner(model), range(len(prompts)), [prompt if text is None else text for prompt, text in zip(prompts, rewritten)])]
    taken = [i for i, text in enumerate(rewritten) if text is not None]
    asked = [Routed(model, range(len(prompts)), prompts)] if len(taken) < len(prompts) else []  # no prefix: as asked
    return [*asked, *([Routed(runner(other), taken, [rewritten[i] for i in taken])] if taken else [])]


def in_order(groups: Sequence[Routed], results: Sequence[Sequence[T]]) -> list[T]:
    """Each group's results (one per prompt, in the group's order) put back in the caller's order; a later
    group's result replaces an earlier one's at the same position."""
    placed: dict[int, T] = {}
    for group, scored in zip(groups, results, strict=True):
        if len(scored) != len(group.positions):
            raise ValueError(f"{len(scored)} results for {len(group.positions)} routed prompts")
        placed.update(zip(group.positions, scored))
    return [placed[i] for i in range(len(placed))]


@contextmanager
def installed(model: nn.Module, router: Router | None) -> Iterator[Router | None]:
    """The model with `router` reading its memory and reporting its diagnostics (nothing to do for None);
    removed on exit."""
    if router is None:
        yield None
        return
    if getattr(model, ROUTER_ATTRIBUTE, None) is not None:
        raise RuntimeError("a router is already installed on this model")
    setattr(model, ROUTER_ATTRIBUTE, router)
    install(model, ROUTER_ATTRIBUTE, router)
    try:
        yield router
    finally:
        uninstall(model, ROUTER_ATTRIBUTE)
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
