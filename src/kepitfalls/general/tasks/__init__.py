"""The four Figure-4 tasks, one module each: its examples (prompt and references) and its two scorers.

Both scorers read the same stored generations (`generation.Generation`): `gu` reproduces Gu et al.'s
scoring, quirks included, on the whole decoded sequence; `clean` reads the new tokens only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from kepitfalls.general.config import Task
from kepitfalls.general.generation import Generation
from kepitfalls.general.names import SCORERS, TASKS

__all__ = ["SCORERS", "TASKS", "Example", "Scorer", "examples", "task_module"]


@dataclass(frozen=True)
class Example:
    """One task item: its id in the data file, the prompt generated from, and the reference answer(s)."""

    id: str
    prompt: str
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Scorer:
    """Per-example values of each metric over a whole task (Gu's NQ scorer carries state from one example to
    the next, so scorers see the list). `binary`: every value is 0 or 1 (Clopper–Pearson intervals)."""

    metrics: tuple[str, ...]
    binary: bool
    score: Callable[[Sequence[Example], Sequence[Generation]], dict[str, list[float]]]


def task_module(name: str) -> ModuleType:
    """The module of a task: `examples(raw_root, config, seed)`, `MAIN` (the plotted metric), `SCORERS`."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; implemented: {', '.join(TASKS)}")
    return importlib.import_module(f"kepitfalls.general.tasks.{name}")


def examples(name: str, raw_root: Path, config: Task, seed: int) -> list[Example]:
    return task_module(name).examples(raw_root, config, seed)
