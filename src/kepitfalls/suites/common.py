"""What every suite shares: its records on disk, the edit cases it asks for, and applying their deltas."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence, TypeVar

import torch
from pydantic import PositiveInt
from safetensors.torch import load_file, save_file

from kepitfalls.atomic import atomic_path, write_json
from kepitfalls.data.pitfalls import MODELS as PITFALLS_MODELS
from kepitfalls.data.records import EditRequest
from kepitfalls.deltas.codecs import Delta
from kepitfalls.models.loading import LoadedModel
from kepitfalls.schema import Section, Seed

R = TypeVar("R")


class SuiteConfig(Section):
    """What every suite's `suites.<suite>` block holds; each suite module's `Config` adds its own keys.

    `subset_size` null takes every record; `known_only` keeps the facts the unedited model reproduces.
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


@dataclass
class PreScores:
    """Scores of the unedited model, computed once per (model, suite, subset) by the `pre` stage."""

    values: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


VALUES_FILE = "values.json"
TENSORS_FILE = "tensors.safetensors"


def save_pre(directory: Path, pre: PreScores) -> None:
    write_json(directory / VALUES_FILE, pre.values)
    with atomic_path(directory / TENSORS_FILE, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in pre.tensors.items()}, str(tmp))


def load_pre(directory: Path) -> PreScores:
    values = json.loads((directory / VALUES_FILE).read_text(encoding="utf-8"))
    return PreScores(values, load_file(str(directory / TENSORS_FILE)))


def save_records(path: Path, suite: str, records: Sequence[Any], selection: dict[str, Any]) -> None:
    """Write a suite's selected records (dataclasses) with how they were selected."""
    write_json(path, {"suite": suite, "selection": selection, "records": [dataclasses.asdict(r) for r in records]})


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


def load_records(path: Path, record_type: type[R]) -> list[R]:
    """Read records written by `save_records` back into their dataclass (nested ones included)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return [from_plain(record_type, raw) for raw in payload["records"]]


@contextmanager
def applied(lm: LoadedModel, deltas: dict[str, Delta], case_ids: Sequence[str]) -> Iterator[None]:
    """The model with these cases' deltas applied in order; reverted in reverse order on exit."""
    done: list[Delta] = []
    try:
        for case_id in case_ids:
            deltas[case_id].apply(lm.model)
            done.append(deltas[case_id])
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
