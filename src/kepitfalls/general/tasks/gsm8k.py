"""GSM8K prompts: Gu et al.'s, which give the gold rationale and ask only for the number
(test-reasoning-after.py; five new tokens)."""

from __future__ import annotations

from pathlib import Path

from kepitfalls.data.gsm8k import load_gsm8k
from kepitfalls.data.records import select_subset
from kepitfalls.general.config import Task
from kepitfalls.general.tasks import Example

MARKER = "Therefore, the answer (arabic numerals) is:"
PROMPT = "Q: {question} A:Let's think step by step. {hint} " + MARKER


def examples(raw_root: Path, config: Task, seed: int) -> list[Example]:
    items = [
        Example(str(r.case_id), PROMPT.format(question=r.question, hint=r.rationale), (r.final_answer,))
        for r in load_gsm8k(raw_root / "gsm8k")
    ]
    return select_subset(items, config.subset_size, seed)
