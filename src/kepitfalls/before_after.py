"""One edit, before and after: what `kepitfalls edit` shows (EasyEdit's one-call `editor.edit`, in this tool).

The readouts are the suites' own primitives: the greedy continuation of the rewrite prompt, and the mean
token probability (teacher-forced, METRICS.md §1.1) of the old and the new target after the prompt, each
paraphrase and each neighbouring prompt. The edit is reverted afterwards, so the model is left as found.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kepitfalls import layout
from kepitfalls.config import Params
from kepitfalls.editing import build_method
from kepitfalls.methods.base import EditMethod
from kepitfalls.models.loading import LoadedModel
from kepitfalls.models.materialize import MANIFEST
from kepitfalls.params import PROJECT_ROOT
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.primitives import greedy_generate, mean_target_prob
from kepitfalls.scoring.router import installed


class InvalidRequestError(ValueError):
    """The fact asked for cannot be edited by any method (see `EditRequest.problems`)."""


@dataclass(frozen=True)
class Readout:
    """P̄ of the old and new targets after one prompt; `kind` is prompt, paraphrase or neighbour."""

    kind: str
    prompt: str
    p_true: float | None
    p_new: float


@dataclass(frozen=True)
class State:
    """What the model does with the fact at one moment (before or after the edit)."""

    continuation: str
    readouts: list[Readout]


def checked_request(prompt: str, subject: str, target_new: str, target_true: str | None) -> EditRequest:
    """The edit request, refused with every problem named if no method could make it."""
    request = EditRequest(prompt, subject, target_new, target_true)
    problems = request.problems()
    if problems:
        raise InvalidRequestError("; ".join(problems))
    return request


def read_state(
    lm: LoadedModel, request: EditRequest, paraphrases: list[str], neighbours: list[str], max_new_tokens: int
) -> State:
    """The greedy continuation of the rewrite prompt and P̄(old), P̄(new) after every probe prompt."""
    probes = [("prompt", request.rewrite_prompt)] + [("paraphrase", p) for p in paraphrases] + [("neighbour", p) for p in neighbours]
    prompts = [prompt for _, prompt in probes]
    p_new = mean_target_prob(lm.model, lm.tokenizer, prompts, [request.target_new] * len(prompts))
    p_true = (
        mean_target_prob(lm.model, lm.tokenizer, prompts, [request.target_true] * len(prompts))
        if request.target_true
        else [None] * len(prompts)
    )
    readouts = [Readout(kind, prompt, t, n) for (kind, prompt), t, n in zip(probes, p_true, p_new)]
    continuation = greedy_generate(lm.model, lm.tokenizer, [request.rewrite_prompt], max_new_tokens)[0]
    return State(continuation, readouts)


def edit_before_after(
    lm: LoadedModel, method: EditMethod, request: EditRequest, paraphrases: list[str], neighbours: list[str],
    max_new_tokens: int,
) -> dict:
    """Read the model, edit it, read it again, revert: a JSON-ready summary with the edit's wall time."""
    before = read_state(lm, request, paraphrases, neighbours, max_new_tokens)
    started = time.perf_counter()
    delta = method.edit(lm, [request])
    seconds = time.perf_counter() - started
    with installed(lm.model, method.router()):
        delta.apply(lm.model)
        try:
            after = read_state(lm, request, paraphrases, neighbours, max_new_tokens)
        finally:
            delta.revert(lm.model)
    return {
        "method": method.name,
        "model": lm.name,
        "model_identity": lm.identity,
        "request": asdict(request),
        "edit_seconds": seconds,
        "before": asdict(before),
        "after": asdict(after),
    }


def missing_inputs(params: Params, method: EditMethod) -> list[Path]:
    """The materialised model and the method's upstream artifacts (templates, trained editors, statistics) not yet built."""
    wanted = [layout.model_dir(params.model) / MANIFEST, *method.upstream_files()]
    return [path for path in wanted if not path.exists()]


def build_inputs(params: Params, method_name: str) -> None:
    """Build the model, the method's templates and (where it reads them) the statistics with the pipeline's
    own stages, through DVC, so that they are the very files `dvc repro` would use. DVC's output goes to
    stderr, leaving stdout to the command's result."""
    stages = ["model", f"prepare@{method_name}"]
    if params.hparams(method_name).stats_layers():
        stages.append("stats")
    subprocess.run([sys.executable, "-m", "dvc", "repro", *stages], cwd=PROJECT_ROOT, check=True, stdout=sys.stderr)


def prepared_method(params: Params, method_name: str, may_build: bool) -> EditMethod:
    """The method with its inputs present: built through DVC where missing and `may_build`, else an error
    naming what is missing and the command that builds it."""
    method = build_method(params, method_name)
    missing = missing_inputs(params, method)
    if missing and may_build:
        build_inputs(params, method_name)
        missing = missing_inputs(params, method)
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(str(path) for path in missing)}; build them with `dvc repro model prepare@{method_name} stats`"
            f"{'' if may_build else f' after setting model: {params.model} in params.yaml'}"
        )
    return method


def _prob(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def as_text(summary: dict) -> str:
    """The summary as a terminal table: one row per probe prompt, P̄(old) and P̄(new) before → after."""
    request = summary["request"]
    old = request["target_true"] or "old"
    lines = [
        f"{summary['method']} on {summary['model']}: {request['prompt'].replace('{}', request['subject'])!r} "
        f"-> {request['target_new']!r}" + (f" (was {old!r})" if request["target_true"] else ""),
        f"edit computed in {summary['edit_seconds']:.2f} s",
        "",
        f"{'':11} {'P(' + old + ') before → after':>26}  {'P(' + request['target_new'] + ') before → after':>26}  prompt",
    ]
    for before, after in zip(summary["before"]["readouts"], summary["after"]["readouts"]):
        true_cell = f"{_prob(before['p_true'])} → {_prob(after['p_true'])}"
        new_cell = f"{_prob(before['p_new'])} → {_prob(after['p_new'])}"
        lines.append(f"{before['kind']:11} {true_cell:>26}  {new_cell:>26}  {before['prompt']}")
    lines += [
        "",
        "greedy continuation of the prompt",
        f"  before: {summary['before']['continuation']!r}",
        f"  after:  {summary['after']['continuation']!r}",
    ]
    return "\n".join(lines)
