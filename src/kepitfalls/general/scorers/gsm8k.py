"""GSM8K scorers: Gu et al.'s substring test after the prompt's marker, and the first number of the new tokens."""

from __future__ import annotations

import re
from typing import Sequence

from kepitfalls.general import names
from kepitfalls.general.generated import Generation
from kepitfalls.general.scorers import Scorer
from kepitfalls.general.tasks import Example
from kepitfalls.general.tasks.gsm8k import MARKER

MAIN = names.MAIN["gsm8k"]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


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
