"""NQ-open prompts (Gu et al.'s test-OpenDomainQA-after.py), 20 new tokens.

Gu et al. insert a retrieved passage, which is not available offline: without `general.tasks.nq.passages`
the prompt is the closed-book form of theirs, ending in "Answer:"; with a file of their
test-OpenDomainQA.jsonl records it is their exact prompt with the first passage.
"""

from __future__ import annotations

from pathlib import Path

from kepitfalls.data.nq import load_nq
from kepitfalls.data.records import jsonl_records, select_subset
from kepitfalls.general.config import NqTask
from kepitfalls.general.tasks import Example

CLOSED_BOOK = "Answer the following question. Question: {question} Answer:"
WITH_PASSAGE = "Refer to the passage below and answer the following question. Passage: {passage} Question: {question}"


def examples(raw_root: Path, config: NqTask, seed: int) -> list[Example]:
    if config.passages is None:
        items = [Example(str(r.case_id), CLOSED_BOOK.format(question=r.question), r.answers) for r in load_nq(raw_root / "natural_questions")]
    else:
        items = [
            Example(str(f.index), WITH_PASSAGE.format(passage=f.texts("output")[0], question=f.text("question")), f.texts("answer"))
            for f in jsonl_records(raw_root / config.passages)
        ]
    return select_subset(items, config.subset_size, seed)
