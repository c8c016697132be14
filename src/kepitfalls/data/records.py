"""Shared reading helpers for every loader: file parsing, typed field access, zsRE-style requests, subsets.

Loaders only describe their schema; everything that can fail (bad JSON, a missing field, a wrong type)
fails here, with the file, the record index and the field in the message.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from kepitfalls.requests import EditRequest

from .errors import InvalidFileError, MalformedRecordError

T = TypeVar("T")


def resolve(path: Path | str, relpath: str) -> Path:
    """`path` itself if it is a file, else `path/relpath`: loaders accept a file or a benchmark folder."""
    path = Path(path)
    return path / relpath if path.is_dir() else path


def read_json(path: Path) -> Any:
    """Parse one JSON document (CRLF is ordinary JSON whitespace); a bad or truncated file names itself."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InvalidFileError(path, f"invalid or truncated JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidFileError(path, f"not UTF-8 text: {exc}") from exc


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its LF/CRLF ending), skipping blank lines."""
    try:
        with open(path, encoding="utf-8", newline=None) as handle:
            for lineno, line in enumerate(handle, start=1):
                line = line.rstrip("\n")
                if line.strip():
                    yield lineno, line
    except UnicodeDecodeError as exc:
        raise InvalidFileError(path, f"not UTF-8 text: {exc}") from exc


class Fields:
    """Typed access to one JSON object of a file; every failure names file, record index and field path."""

    def __init__(self, data: Any, file: Path, index: int | str, prefix: str = "") -> None:
        self.file, self.index, self.prefix = file, index, prefix
        if not isinstance(data, dict):
            raise MalformedRecordError(file, index, prefix or "<record>", f"expected an object, got {type(data).__name__}")
        self.data = data

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> MalformedRecordError:
        return MalformedRecordError(self.file, self.index, self.path(key), problem)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        if key not in self.data:
            raise self.error(key, "missing")
        return self.data[key]

    def text(self, key: str, non_empty: bool = False) -> str:
        value = self._check(key, self.raw(key), str)
        if non_empty and not value.strip():
            raise self.error(key, f"empty text {value!r}")
        return value

    def template(self, key: str) -> str:
        """A prompt template: text in which `{}` marks the subject."""
        value = self.text(key, non_empty=True)
        if "{}" not in value:
            raise self.error(key, "template has no '{}' for the subject")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.has(key) else None

    def integer(self, key: str) -> int:
        value = self.raw(key)
        if isinstance(value, bool):
            raise self.error(key, "expected int, got bool")
        return self._check(key, value, int)

    def texts(self, key: str, non_empty: bool = True) -> tuple[str, ...]:
        values = self._check(key, self.raw(key), list)
        if non_empty and not values:
            raise self.error(key, "empty list")
        for i, value in enumerate(values):
            self._check(f"{key}[{i}]", value, str)
        return tuple(values)

    def integers(self, key: str) -> tuple[int, ...]:
        values = self._check(key, self.raw(key), list)
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(f"{key}[{i}]", f"expected int, got {type(value).__name__}")
        return tuple(values)

    def obj(self, key: str) -> "Fields":
        return Fields(self.raw(key), self.file, self.index, self.path(key))

    def objs(self, key: str, non_empty: bool = True) -> tuple["Fields", ...]:
        values = self._check(key, self.raw(key), list)
        if non_empty and not values:
            raise self.error(key, "empty list")
        return tuple(Fields(v, self.file, self.index, self.path(f"{key}[{i}]")) for i, v in enumerate(values))

    def _check(self, key: str, value: Any, kind: type[T]) -> T:
        if not isinstance(value, kind):
            raise self.error(key, f"expected {kind.__name__}, got {type(value).__name__}")
        return value


def json_records(path: Path) -> list[Fields]:
    """The records of a file whose top level is a JSON list, indexed by position."""
    data = read_json(path)
    if not isinstance(data, list):
        raise InvalidFileError(path, f"expected a JSON list at the top level, got {type(data).__name__}")
    return [Fields(item, path, index) for index, item in enumerate(data)]


def json_object(path: Path) -> Fields:
    """A file whose top level is one JSON object (e.g. relation id -> prompts), as a single record."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InvalidFileError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    return Fields(data, path, "<top level>")


def jsonl_records(path: Path) -> list[Fields]:
    """The records of a JSON-lines file, indexed by position among non-blank lines."""
    records = []
    for lineno, line in read_lines(path):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidFileError(path, f"invalid JSON on line {lineno}: {exc.msg}") from exc
        records.append(Fields(item, path, len(records)))
    return records


@dataclass(frozen=True)
class Probe:
    """A prompt and the answer read after it: a portability question and its answer, a locality probe and
    the continuation it is teacher-forced on."""

    prompt: str
    answer: str


def question_request(question: str, subject: str, target_new: str, target_true: str | None) -> EditRequest:
    """An edit request for a zsRE-style question, with the subject turned into the `{}` slot."""
    return EditRequest(question.replace(subject, "{}"), subject, target_new, target_true)


def select_subset(records: Sequence[T], size: int | None, seed: int) -> list[T]:
    """A seeded subset in file order; the subsets of one seed nest (size 100 is inside size 200).

    `size=None` means every record. A size larger than the data set is an error rather than a silent cap,
    so that a params.yaml typo cannot shrink an experiment unnoticed.
    """
    if size is None:
        return list(records)
    if not 0 <= size <= len(records):
        raise ValueError(f"subset size {size} is outside 0..{len(records)} (the number of records)")
    return [records[i] for i in sorted(_seeded_order(len(records), seed)[:size])]


def select_subset_where(
    records: Sequence[T], size: int | None, seed: int, keep: Callable[[list[T]], list[bool]], chunk: int = 64
) -> list[T]:
    """The first `size` records in the seeded order that pass `keep`, in file order (all that pass if None).

    `keep` is called on `chunk` records at a time (it may batch a model over them) and only until `size`
    have passed, so a small subset of a large pool costs a few chunks; the subsets of one seed still nest.
    """
    if size is not None and size < 0:
        raise ValueError(f"subset size {size} is negative")
    order, kept = _seeded_order(len(records), seed), []
    for start in range(0, len(order), chunk):
        if size is not None and len(kept) >= size:
            break
        tested = order[start : start + chunk]
        verdicts = keep([records[i] for i in tested])
        if len(verdicts) != len(tested):
            raise ValueError(f"the filter returned {len(verdicts)} verdicts for {len(tested)} records")
        kept.extend(i for i, ok in zip(tested, verdicts) if ok)
    if size is not None and len(kept) < size:
        raise ValueError(f"subset size {size} asked, but only {len(kept)} of {len(records)} records pass the filter")
    return [records[i] for i in sorted(kept if size is None else kept[:size])]


def _seeded_order(count: int, seed: int) -> list[int]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order
