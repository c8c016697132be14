"""The four Figure-4 tasks' prompts, one module each: `examples(raw_root, config, seed)` gives every item's
id, prompt and reference answer(s). Their scorers live in `general.scorers`, so that a scorer change
re-scores the stored generations without re-generating them (the generation stage depends on this package
only)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from kepitfalls.general.config import Task
from kepitfalls.general.names import TASKS


@dataclass(frozen=True)
class Example:
    """One task item: its id in the data file, the prompt generated from, and the reference answer(s)."""

    id: str
    prompt: str
    refs: tuple[str, ...]


def examples(name: str, raw_root: Path, config: Task, seed: int) -> list[Example]:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; implemented: {', '.join(TASKS)}")
    return importlib.import_module(f"kepitfalls.general.tasks.{name}").examples(raw_root, config, seed)
