"""SST-2 prompts: Gu et al.'s zero-shot sentiment prompt (test-SentimentAnalysis-after.py), one generated token."""

from __future__ import annotations

from pathlib import Path

from kepitfalls.data.records import select_subset
from kepitfalls.data.sst2 import load_sst2
from kepitfalls.general.config import Task
from kepitfalls.general.tasks import Example

PROMPT = (
    "For each snippet of text,label the sentiment of the text as positive or negative."
    "The answer should be exact 'positive' or 'negative'. text: {text} answer:"
)
LABELS = {1: "positive", 0: "negative"}


def examples(raw_root: Path, config: Task, seed: int) -> list[Example]:
    items = [Example(str(r.case_id), PROMPT.format(text=r.sentence), (LABELS[r.label],)) for r in load_sst2(raw_root / "sst2")]
    return select_subset(items, config.subset_size, seed)
