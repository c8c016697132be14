"""Walking a method's chain and measuring the model at each point: what the `general@` stages store.

A run holds raw outputs only (generations, per-sentence perplexities, per-window NLLs), never scores, so a
scorer change re-scores without re-generating. Its bytes depend only on the model, the deltas and the
configuration; timings go to stderr and the caller's run file.

A memory method's line is measured with its router installed (`scoring.router.installed`, as `cell@`
does): the task prompts are routed before generation, its memory grows along the chain, and each
checkpoint's diagnostics say how many of each task's prompts the memory took (`routed`). The perplexities
read token windows and sentences with no prompt to route, so they are the weights' alone: unchanged for a
memory method.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kepitfalls.data.me_ppl import load_me_ppl
from kepitfalls.data.records import select_subset
from kepitfalls.deltas.codecs import Delta
from kepitfalls.general.chain import checkpoint_cases
from kepitfalls.general.config import General, Mode
from kepitfalls.general.generation import greedy
from kepitfalls.general.perplexity import mean_nlls, sentence_perplexities, wikitext_windows
from kepitfalls.general.names import TASKS
from kepitfalls.general.tasks import Example, examples
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.scoring.router import Router, installed
from kepitfalls.suites.common import applied
from kepitfalls.workers import Loader, map_cases


@dataclasses.dataclass
class Probes:
    """What every point of every chain is measured on, built once per run."""

    tasks: dict[str, list[Example]]
    me_ppl: list[str]
    wikitext: list[list[int]]

    @classmethod
    def build(cls, lm: LoadedModel, raw_root: Path, config: General) -> Probes:
        tasks = {name: examples(name, raw_root, getattr(config.tasks, name), config.seed) for name in TASKS}
        return cls(tasks, select_subset(load_me_ppl(raw_root / config.me_ppl.file), config.me_ppl.subset_size, config.seed), wikitext_windows(lm, raw_root / "wikitext2" / "test.txt", config.wikitext))


def me_ppl(lm: LoadedModel, probes: Probes, config: General) -> list[float]:
    return sentence_perplexities(lm, probes.me_ppl, config.me_ppl.batch_size)


def checkpoint(lm: LoadedModel, probes: Probes, config: General, timings: dict[str, float]) -> dict[str, Any]:
    """Every task's generations, the WikiText-2 windows' NLLs and the installed components' diagnostics on the
    model as it is now."""
    started = time.perf_counter()
    tasks = {}
    for name, items in probes.tasks.items():
        generations = greedy(lm, [e.prompt for e in items], getattr(config.tasks, name).max_new_tokens, config.batch_size)
        tasks[name] = [{"id": e.id, "refs": list(e.refs), "new": g.new, "full": g.full} for e, g in zip(items, generations)]
    wikitext = mean_nlls(lm, probes.wikitext, config.me_ppl.batch_size)
    timings.setdefault("checkpoint_seconds", []).append(time.perf_counter() - started)
    return {"tasks": tasks, "wikitext_nll": wikitext, "diagnostics": diagnostics(lm, probes)}


def diagnostics(lm: LoadedModel, probes: Probes) -> dict[str, dict[str, list[float]]]:
    """Per task, what the components the deltas installed report on its prompts (a codebook's hits, a
    router's choices: the evidence behind a memory method's flat line); empty for a model without any."""
    found: dict[str, dict[str, list[float]]] = {}
    for name, items in probes.tasks.items():
        for key, values in prompt_diagnostics(lm, {name: [e.prompt for e in items]}).items():
            found.setdefault(name, {})[key.removesuffix(f"_{name}")] = values
    return found


def unedited_run(lm: LoadedModel, probes: Probes, config: General) -> tuple[dict[str, Any], dict[str, Any]]:
    """The n = 0 point every method's line starts from, measured once."""
    timings: dict[str, Any] = {}
    point = checkpoint(lm, probes, config, timings)
    return {"model": lm.identity, "checkpoints": {"0": point}, "me_ppl": {"0": me_ppl(lm, probes, config)}}, timings


def _point(
    probes: Probes, config: General, mode: Mode, deltas: Mapping[str, Delta], router: Router | None, lm: LoadedModel, n: int
) -> tuple[list[float], dict[str, Any] | None, dict[str, list[float]]]:
    """ME-PPL on the model after n edits (sequential: the chain's first n deltas applied in order; batch:
    checkpoint n's one delta), and the tasks where n is a checkpoint; the model is restored on return.
    One case of `chain_run`'s map: whichever process computes it installs the method's `router` (None for a
    method that has none) and applies the deltas itself."""
    timings: dict[str, Any] = {}
    with installed(lm.model, router), applied(lm, deltas, checkpoint_cases(mode, n)):
        started = time.perf_counter()
        perplexities = me_ppl(lm, probes, config)
        timings["me_ppl_seconds"] = [time.perf_counter() - started]
        point = checkpoint(lm, probes, config, timings) if n in config.checkpoints else None
    return perplexities, point, timings


def chain_run(
    lm: LoadedModel, probes: Probes, config: General, mode: Mode, deltas: Mapping[str, Delta], router: Router | None,
    workers: int = 1, loader: Loader | None = None, engine: str = "local",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sequential: ME-PPL after each edit of the chain, the tasks at each edited checkpoint. Batch: each
    checkpoint's one delta applied alone. Every point is measured on its own (`_point`), fanned out over
    `workers` processes or Ray actors like the edit and evaluate stages: the same bytes for any count."""
    positions = list(range(1, config.edits + 1)) if mode == "sequential" else config.edited_checkpoints
    measured = map_cases(lm, loader, partial(_point, probes, config, mode, deltas, router), positions, workers, f"general {mode}", engine=engine)
    timings: dict[str, Any] = {}
    points: dict[str, Any] = {}
    perplexities: dict[str, list[float]] = {}
    for n, (perplexity, point, times) in zip(positions, measured):
        perplexities[str(n)] = perplexity
        if point is not None:
            points[str(n)] = point
            print(f"checkpoint {n}: {times['checkpoint_seconds'][-1]:.1f} s", file=sys.stderr)
        for key, values in times.items():
            timings.setdefault(key, []).extend(values)
    return {"model": lm.identity, "mode": mode, "checkpoints": points, "me_ppl": perplexities}, timings
