"""The `general` section of params.yaml: the Figure-4 chain, its checkpoints, the tasks and the perplexity sets."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from pydantic_core import PydanticCustomError

from kepitfalls.methods import SUPPORTED as METHODS
from kepitfalls.schema import Section, Seed

#: The name of the unedited model's run (the n = 0 point every method's line starts from).
UNEDITED = "unedited"


class Task(Section):
    """One task: `subset_size` examples (null: all), a seeded subset that nests across sizes."""

    subset_size: PositiveInt | None
    max_new_tokens: PositiveInt


class NqTask(Task):
    """`passages` null: the closed-book prompt; a JSON Lines file of Gu et al.'s test-OpenDomainQA.jsonl
    (question, output = passages, answer), relative to data/raw: their exact prompt with its first passage."""

    passages: str | None


class Tasks(Section):
    nq: NqTask
    sst2: Task
    gsm8k: Task
    samsum: Task


class MePpl(Section):
    """Yang et al.'s sentences (relative to data/raw), scored after every edit, `batch_size` per forward;
    `subset_size` of them (null: all), a seeded subset by `general.seed`."""

    file: str
    subset_size: PositiveInt | None
    batch_size: PositiveInt


class WikiSample(Section):
    """WikiText-2 test perplexity at each checkpoint: `sequences` windows of `length` tokens, chosen by `seed`."""

    sequences: PositiveInt
    length: Annotated[int, Field(ge=2)]
    seed: Seed


class General(Section):
    """One chain of `edits` sequential edits per method, from record `start` of `file` (relative to
    data/raw), evaluated at `checkpoints` (edit counts; 0 is the unedited model, shared by every method).
    `batch_methods` also edit each checkpoint's n requests at once, as a separately labelled line."""

    methods: list[Literal[tuple(METHODS)]]
    batch_methods: list[Literal[tuple(METHODS)]]
    file: str
    start: NonNegativeInt
    edits: PositiveInt
    checkpoints: Annotated[list[NonNegativeInt], Field(min_length=1)]
    seed: Seed
    batch_size: PositiveInt
    tasks: Tasks
    me_ppl: MePpl
    wikitext: WikiSample

    @model_validator(mode="after")
    def _consistent(self) -> General:
        if self.checkpoints != sorted(set(self.checkpoints)) or self.checkpoints[-1] > self.edits:
            raise PydanticCustomError(
                "checkpoints", "general.checkpoints {checkpoints} must be increasing edit counts within 0..{edits} (general.edits)",
                {"checkpoints": self.checkpoints, "edits": self.edits},
            )
        extra = [m for m in self.batch_methods if m not in self.methods]
        if extra:
            raise PydanticCustomError(
                "batch_methods", "general.batch_methods {extra} must also be in general.methods (their lines are scored with the method's)",
                {"extra": extra},
            )
        return self

    @property
    def edited_checkpoints(self) -> list[int]:
        """Checkpoints past the unedited model (0 is measured once, by the unedited run)."""
        return [n for n in self.checkpoints if n > 0]


Mode = Literal["sequential", "batch"]
