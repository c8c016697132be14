"""The two scorers of each Figure-4 task, one module per task (`SCORERS`: scorer name → `Scorer`), both
reading the same stored generations (`generated.Generation`): `gu` reproduces Gu et al.'s scoring, quirks
included, on the whole decoded sequence; `clean` reads the new tokens only."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Sequence

from kepitfalls.general.generated import Generation
from kepitfalls.general.names import TASKS
from kepitfalls.general.tasks import Example


@dataclass(frozen=True)
class Scorer:
    """Per-example values of each metric over a whole task (Gu's NQ scorer carries state from one example to
    the next, so scorers see the list). `binary`: every value is 0 or 1 (Clopper–Pearson intervals)."""

    metrics: tuple[str, ...]
    binary: bool
    score: Callable[[Sequence[Example], Sequence[Generation]], dict[str, list[float]]]


def scorer_module(task: str) -> ModuleType:
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; implemented: {', '.join(TASKS)}")
    return importlib.import_module(f"kepitfalls.general.scorers.{task}")
