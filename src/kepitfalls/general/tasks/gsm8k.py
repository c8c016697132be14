"""GSM8K: solve rate, with Gu et al.'s prompt, which gives the gold rationale and asks only for the number
(test-reasoning-after.py; five new tokens)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from kepitfalls.data.gsm8k import load_gsm8k
from kepitfalls.data.records import select_subset
from kepitfalls.general.config import Task
from kepitfalls.general import names
from kepitfalls.general.generation import Generation
from kepitfalls.general.tasks import Example, Scorer

MAIN = names.MAIN["gsm8k"]
MARKER = "Therefore, the answer (arabic numerals) is:"
PROMPT = "Q: {question} A:Let's think step by step. {hint} " + MARKER
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def examples(raw_root: Path, config: Task, seed: int) -> list[Example]:
    items = [
        Example(str(r.case_id), PROMPT.format(question=r.question, hint=r.rationale), (r.final_answer,))
        for r in load_gsm8k(raw_root / "gsm8k")
    ]
    return select_subset(items, config.subset_size, seed)


def gu_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """Gu et al.: the gold answer is a substring of what follows the marker (so "5" is found in "15")."""
    return {MAIN: [float(item.refs[0] in g.full.split(MARKER)[1]) for item, g in zip(items, generations, strict=True)]}


def _number(text: str) -> float | None:
    found = NUMBER.search(text)
    return float(found.group().replace(",", "")) if found else None


def clean_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """The first number in the new tokens equals the gold answer (commas ignored)."""
    return {MAIN: [float(_number(g.new) == _number(item.refs[0])) for item, g in zip(items, generations, strict=True)]}


SCORERS = {"gu": Scorer((MAIN,), True, gu_scores), "clean": Scorer((MAIN,), True, clean_scores)}
