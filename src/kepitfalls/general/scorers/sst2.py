"""SST-2 scorers: accuracy over every example (unparsable answers wrong), Gu et al.'s way and on the new tokens."""

from __future__ import annotations

from typing import Sequence

from kepitfalls.general import names
from kepitfalls.general.generated import Generation
from kepitfalls.general.scorers import Scorer
from kepitfalls.general.tasks import Example

MAIN = names.MAIN["sst2"]


def gu_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """Gu et al.'s `total_accuracy`: the text after the last "answer:" of the whole decoded sequence; a hit
    when it contains the gold label, "positive" tested first (so an answer with both words counts as positive);
    unparsable answers count as wrong."""
    values = []
    for item, generation in zip(items, generations, strict=True):
        predict = generation.full.split("answer:")[-1].lower()
        said = "positive" if "positive" in predict else "negative" if "negative" in predict else None
        values.append(float(said == item.refs[0]))
    return {MAIN: values}


def clean_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """The first word of the new tokens must be the label (case and punctuation aside)."""
    values = []
    for item, generation in zip(items, generations, strict=True):
        words = generation.new.strip().lower().split()
        values.append(float(bool(words) and words[0].strip(".,!'\"") == item.refs[0]))
    return {MAIN: values}


SCORERS = {"gu": Scorer((MAIN,), True, gu_scores), "clean": Scorer((MAIN,), True, clean_scores)}
