"""What every suite shares: its records on disk, the edit cases it asks for, and applying their deltas."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import torch
from pydantic import PositiveInt

from kepitfalls.atomic import write_json
from kepitfalls.data.pitfalls import MODELS as PITFALLS_MODELS
from kepitfalls.data.records import select_subset, select_subset_where
from kepitfalls.deltas.codecs import Delta
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.schema import Section, Seed
from kepitfalls.scoring.primitives import teacher_forced
from kepitfalls.tensorfile import load_tensors, save_tensors

R = TypeVar("R")


class SuiteConfig(Section):
    """What every suite's `suites.<suite>` block holds; each suite module's `Config` adds its own keys.

    `subset_size` null takes every record; `known_only` keeps the records whose facts the unedited model
    knows (`KNOWN_POLICY`).
    """

    benchmark: str
    subset_size: PositiveInt | None
    seed: Seed
    known_only: bool


class PitfallsConfig(SuiteConfig):
    """ConflictEdit and RoundEdit: `<benchmark>/<model_folder>/<kind>...json`, `subset_size` records per kind."""

    model_folder: Literal[PITFALLS_MODELS]
    kinds: list[str]


@dataclass(frozen=True)
class EditCase:
    """Requests edited together (or in sequence, as the method does) into one stored delta.

    `base` names another case of the same suite whose delta is applied while this one is computed: the
    second edit of a sequential protocol (ConflictEdit, RoundEdit) is computed on the first-edited model.
    """

    case_id: str
    requests: tuple[EditRequest, ...]
    base: str | None = None


class InvalidEditCaseError(ValueError):
    """An edit case asks for a request no method can make (see `EditRequest.problems`)."""


def check_cases(suite: str, cases: Iterable[EditCase]) -> None:
    """Check every request of every case once, the same way for every method, before any edit runs.

    The case id carries the record's id (`<record>` or `<kind>/<record>/<step>`), so the error names the suite,
    its records file, the record and case, and the request.
    """
    for case in cases:
        for i, request in enumerate(case.requests):
            problems = request.problems()
            if problems:
                raise InvalidEditCaseError(
                    f"suite {suite} (data/suites/{suite}.json), case {case.case_id!r}, request {i}: {'; '.join(problems)}"
                )


@dataclass
class PreScores:
    """Scores of the unedited model, computed once per (model, suite, subset) by the `pre` stage."""

    values: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


VALUES_FILE = "values.json"
TENSORS_FILE = "tensors.safetensors"


def save_pre(directory: Path, pre: PreScores) -> None:
    write_json(directory / VALUES_FILE, pre.values)
    save_tensors(directory / TENSORS_FILE, pre.tensors)


def load_pre(directory: Path) -> PreScores:
    values = json.loads((directory / VALUES_FILE).read_text(encoding="utf-8"))
    return PreScores(values, load_tensors(directory / TENSORS_FILE)[0])


class Selection:
    """A suite's selected records with a suite-level part that every record is scored with (locality's PIQA
    subsample), for a suite whose functions take more than its records. Subclasses are frozen dataclasses
    with a `records` field; `save_records` stores the other fields apart, under `shared`, so that every
    stored record is a real one."""

    records: Sequence[Any]


def save_records(path: Path, suite: str, records: Sequence[Any] | Selection, selection: dict[str, Any]) -> None:
    """Write a suite's selected records (dataclasses) with how they were selected, and a `Selection`'s shared part."""
    payload: dict[str, Any] = {"suite": suite, "selection": selection}
    if isinstance(records, Selection):
        shared = dataclasses.asdict(records)  # type: ignore[call-overload]
        payload["records"] = shared.pop("records")
        payload["shared"] = shared
    else:
        payload["records"] = [dataclasses.asdict(r) for r in records]
    write_json(path, payload)


def from_plain(kind: Any, value: Any) -> Any:
    """Rebuild a typed value (dataclasses, tuples, lists, dicts, optionals) from its JSON form."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: from_plain(hints[f.name], value[f.name]) for f in dataclasses.fields(kind) if f.init})
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        return from_plain(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in value)
        return tuple(from_plain(a, v) for a, v in zip(args, value)) if args else tuple(value)
    if origin is list:
        return [from_plain(args[0], v) for v in value] if args else list(value)
    if origin is dict:
        return {k: from_plain(args[1], v) for k, v in value.items()} if args else dict(value)
    return value


def load_records(path: Path, record_type: type[R]) -> list[R] | Any:
    """Read records written by `save_records` back into their dataclass (nested ones included); for a
    `Selection` type, the selection with its shared part."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(record_type, type) and issubclass(record_type, Selection):
        if "shared" not in payload:
            raise ValueError(f"{path}: no 'shared' section; {record_type.__name__} needs one (re-run the select stage)")
        return from_plain(record_type, {"records": payload["records"], **payload["shared"]})
    return [from_plain(record_type, raw) for raw in payload["records"]]


@contextmanager
def applied(lm: LoadedModel, deltas: Mapping[str, Delta], case_ids: Sequence[str]) -> Iterator[None]:
    """The model with these cases' deltas applied in order; reverted in reverse order on exit.

    Each delta is looked up once: a mapping that reads from the store gives a new object per lookup, and
    only the applied object holds the saved originals.
    """
    done: list[Delta] = []
    try:
        for case_id in case_ids:
            delta = deltas[case_id]
            delta.apply(lm.model)
            done.append(delta)
        yield
    finally:
        for delta in reversed(done):
            delta.revert(lm.model)


def chain(cases: dict[str, EditCase], case_id: str) -> list[str]:
    """The case ids to apply, in order, to reach the model a case's delta was computed on, then the case."""
    ids = [case_id]
    while cases[ids[0]].base is not None:
        ids.insert(0, cases[ids[0]].base)
    return ids


KNOWN_POLICY = (
    "known_only: records whose every tested fact the unedited model knows (greedy teacher-forced decoding "
    "after the rewrite prompt reproduces every token of the true object; the CounterFact/ROME test)"
)


#: Sequences per forward pass inside one teacher-forced call of `paraphrase_scores` (bounds the logits' memory).
PARAPHRASE_BATCH = 64


def paraphrase_scores(lm: LoadedModel, queries: Sequence[tuple[Sequence[str], str]]) -> list[float]:
    """Per (prompts, target): S, the mean P̄ of the target over the prompts (a rewrite prompt and its
    paraphrases, ConflictEdit's and RoundEdit's score), all in one teacher-forced call on the current model."""
    prompts, targets, spans = [], [], []
    for filled, target in queries:
        spans.append((len(prompts), len(prompts) + len(filled)))
        prompts.extend(filled)
        targets.extend([target] * len(filled))
    results = teacher_forced(lm.model, lm.tokenizer, prompts, targets, batch_size=PARAPHRASE_BATCH)
    return [mean(r.mean_prob for r in results[start:end]) for start, end in spans]


def known_facts(lm: LoadedModel, facts: Sequence[Sequence[EditRequest]]) -> list[bool]:
    """Per record: whether the unedited model knows every one of its facts (`KNOWN_POLICY`).

    A fact without a true object cannot be known. One teacher-forced batch for all facts of the chunk.
    """
    pairs = [(r.rewrite_prompt, r.target_true) for record in facts for r in record if r.target_true]
    results = iter(teacher_forced(lm.model, lm.tokenizer, [p for p, _ in pairs], [t for _, t in pairs])) if pairs else iter(())
    verdicts = []
    for record in facts:
        known = [next(results).token_accuracy == 1.0 for r in record if r.target_true]
        verdicts.append(bool(record) and len(known) == len(record) and all(known))
    return verdicts


def select_records(
    lm: LoadedModel, pool: Sequence[R], config: SuiteConfig, facts: Callable[[R], Sequence[EditRequest]]
) -> list[R]:
    """A suite's seeded subset of `subset_size` records; with `known_only`, of the records whose tested
    `facts` the unedited model knows, tested lazily in the seeded order (subsets of one seed still nest)."""
    if config.known_only:
        return select_subset_where(pool, config.subset_size, config.seed, lambda chunk: known_facts(lm, [facts(r) for r in chunk]))
    return select_subset(pool, config.subset_size, config.seed)
