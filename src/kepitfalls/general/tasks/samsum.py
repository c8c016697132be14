"""SAMSum prompts: a dialogue and "TL;DR:" (Gu et al.'s test-summarization-after.py), 25 new tokens."""

from __future__ import annotations

from pathlib import Path

from kepitfalls.data.records import select_subset
from kepitfalls.data.samsum import load_samsum
from kepitfalls.general.config import Task
from kepitfalls.general.tasks import Example

PROMPT = "{dialogue}\nTL;DR:"


def examples(raw_root: Path, config: Task, seed: int) -> list[Example]:
    items = [Example(r.case_id, PROMPT.format(dialogue=r.dialogue), (r.summary,)) for r in load_samsum(raw_root / "samsum")]
    return select_subset(items, config.subset_size, seed)
