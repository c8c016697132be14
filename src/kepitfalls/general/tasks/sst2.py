"""SST-2: sentiment accuracy over every example, one generated token (Gu et al.'s test-SentimentAnalysis-after.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kepitfalls.data.records import select_subset
from kepitfalls.data.sst2 import load_sst2
from kepitfalls.general.config import Task
from kepitfalls.general import names
from kepitfalls.general.generation import Generation
from kepitfalls.general.tasks import Example, Scorer

MAIN = names.MAIN["sst2"]
PROMPT = (
    "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text: {text} answer:"
)
LABELS = {1: "positive", 0: "negative"}


def examples(raw_root: Path, config: Task, seed: int) -> list[Example]:
    items = [Example(str(r.case_id), PROMPT.format(text=r.sentence), (LABELS[r.label],)) for r in load_sst2(raw_root / "sst2")]
    return select_subset(items, config.subset_size, seed)


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
