"""CounterFact (Meng et al. 2022) in ROME's schema, and EasyEdit's flattened train/val/edit splits.

The ROME schema is used by ROME's `counterfact.json` and by Yao et al.'s One-Hop and Subject-Replace
portability files, which add fields on top of it; `parse_counterfact` is shared with those loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kepitfalls.requests import EditRequest, fill

from .records import Fields, json_records, resolve


ROME_FILE = "counterfact.json"


@dataclass(frozen=True)
class CounterFactRecord:
    case_id: int
    prompt: str  # template; "{}" marks the subject
    subject: str
    relation_id: str
    target_new: str
    target_true: str
    paraphrase_prompts: tuple[str, ...]
    neighborhood_prompts: tuple[str, ...]
    attribute_prompts: tuple[str, ...]
    generation_prompts: tuple[str, ...]

    @property
    def rewrite_prompt(self) -> str:
        return fill(self.prompt, self.subject)

    @property
    def request(self) -> EditRequest:
        return EditRequest(self.prompt, self.subject, self.target_new, self.target_true)


def parse_counterfact(fields: Fields) -> CounterFactRecord:
    """One ROME-schema record; extra fields (portability, alternative_subject, ...) are left to callers."""
    rewrite = fields.obj("requested_rewrite")
    return CounterFactRecord(
        case_id=fields.integer("case_id"),
        prompt=rewrite.template("prompt"),
        subject=rewrite.text("subject", non_empty=True),
        relation_id=rewrite.text("relation_id"),
        target_new=rewrite.obj("target_new").text("str", non_empty=True),
        target_true=rewrite.obj("target_true").text("str", non_empty=True),
        paraphrase_prompts=fields.texts("paraphrase_prompts"),
        neighborhood_prompts=fields.texts("neighborhood_prompts"),
        attribute_prompts=fields.texts("attribute_prompts"),
        generation_prompts=fields.texts("generation_prompts"),
    )


def load_counterfact(path: Path) -> list[CounterFactRecord]:
    """Read a ROME-schema CounterFact JSON list (a file, or a benchmark folder holding counterfact.json)."""
    return [parse_counterfact(f) for f in json_records(resolve(path, ROME_FILE))]


@dataclass(frozen=True)
class CounterFactSplitRecord:
    """EasyEdit's flattened CounterFact case: one rephrase and one locality prompt, prompt already filled."""

    case_id: int
    prompt: str
    subject: str
    target_new: str
    target_true: str
    rephrase_prompt: str
    locality_prompt: str
    locality_ground_truth: str


def load_counterfact_split(path: Path, split: str = "edit") -> list[CounterFactSplitRecord]:
    """Read counterfact-{train,val,edit}.json (a file, or the benchmark folder plus `split`)."""
    return [
        CounterFactSplitRecord(
            case_id=f.integer("case_id"),
            prompt=f.text("prompt"),
            subject=f.text("subject"),
            target_new=f.text("target_new"),
            target_true=f.text("ground_truth"),
            rephrase_prompt=f.text("rephrase_prompt"),
            locality_prompt=f.text("locality_prompt"),
            locality_ground_truth=f.text("locality_ground_truth"),
        )
        for f in json_records(resolve(path, f"easyedit/counterfact-{split}.json"))
    ]
