"""MQuAKE (Zhong et al. 2023): multi-hop cases and the official evaluation prompts.

The record loader reads the official MQuAKE-CF-3k(-v2)/CF/T files unchanged and the MQuAKE-hard subset
in the mirror, which has the same schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kepitfalls.requests import fill

from .records import Fields, json_object, json_records, resolve


HARD_FILE = "derived/MQuAKE-hard.json"
PROMPTS_DIR = "prompts"

Triple = tuple[str, str, str]


@dataclass(frozen=True)
class MquakeEdit:
    prompt: str  # template; "{}" marks the subject
    relation_id: str
    subject: str
    target_new: str
    target_new_id: str
    target_true: str
    target_true_id: str
    question: str

    @property
    def cloze(self) -> str:
        return fill(self.prompt, self.subject)


@dataclass(frozen=True)
class MquakeHop:
    question: str
    cloze: str
    answer: str
    answer_alias: tuple[str, ...]


@dataclass(frozen=True)
class MquakeRecord:
    case_id: int
    requested_rewrite: tuple[MquakeEdit, ...]
    questions: tuple[str, ...]
    answer: str
    answer_alias: tuple[str, ...]
    new_answer: str
    new_answer_alias: tuple[str, ...]
    single_hops: tuple[MquakeHop, ...]
    new_single_hops: tuple[MquakeHop, ...]
    triples: tuple[Triple, ...]  # Wikidata ids of the original chain
    new_triples: tuple[Triple, ...]  # the chain after the edits
    edit_triples: tuple[Triple, ...]  # the edited facts (a subset of new_triples)
    triples_labeled: tuple[Triple, ...]
    new_triples_labeled: tuple[Triple, ...]


def _edit(f: Fields) -> MquakeEdit:
    target_new, target_true = f.obj("target_new"), f.obj("target_true")
    return MquakeEdit(
        prompt=f.template("prompt"),
        relation_id=f.text("relation_id"),
        subject=f.text("subject", non_empty=True),
        target_new=target_new.text("str", non_empty=True),
        target_new_id=target_new.text("id"),
        target_true=target_true.text("str", non_empty=True),
        target_true_id=target_true.text("id"),
        question=f.text("question"),
    )


def _hop(f: Fields) -> MquakeHop:
    return MquakeHop(f.text("question"), f.text("cloze"), f.text("answer"), f.texts("answer_alias", non_empty=False))


def _triples(f: Fields, key: str) -> tuple[Triple, ...]:
    value = f.raw(key)
    if not isinstance(value, list):
        raise f.error(key, f"expected a list of triples, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)):
            raise f.error(f"{key}[{i}]", "expected a [subject, relation, object] list of 3 strings")
    return tuple((s, r, o) for s, r, o in value)


def load_mquake(path: Path) -> list[MquakeRecord]:
    """Read an MQuAKE data set file (or the mquake folder, for MQuAKE-hard)."""
    records = []
    for f in json_records(resolve(path, HARD_FILE)):
        orig = f.obj("orig")
        for hops, chain in (("single_hops", "triples"), ("new_single_hops", "new_triples")):
            if len(f.objs(hops)) != len(_triples(orig, chain)):
                raise f.error(hops, f"{len(f.objs(hops))} hops, but orig.{chain} has {len(_triples(orig, chain))}")
        records.append(MquakeRecord(
            case_id=f.integer("case_id"),
            requested_rewrite=tuple(_edit(e) for e in f.objs("requested_rewrite")),
            questions=f.texts("questions"),
            answer=f.text("answer"),
            answer_alias=f.texts("answer_alias", non_empty=False),
            new_answer=f.text("new_answer"),
            new_answer_alias=f.texts("new_answer_alias", non_empty=False),
            single_hops=tuple(_hop(h) for h in f.objs("single_hops")),
            new_single_hops=tuple(_hop(h) for h in f.objs("new_single_hops")),
            triples=_triples(orig, "triples"),
            new_triples=_triples(orig, "new_triples"),
            edit_triples=_triples(orig, "edit_triples"),
            triples_labeled=_triples(orig, "triples_labeled"),
            new_triples_labeled=_triples(orig, "new_triples_labeled"),
        ))
    return records


@dataclass(frozen=True)
class MquakePrompts:
    """The official prompt files, verbatim (universal newlines)."""

    multihop: str  # 16 "Q: ... A: ..." demonstrations
    multihop_cot: str  # 5 chain-of-thought demonstrations
    mello: str  # MeLLo's decomposition prompt
    rel_prompts: dict[str, str]  # relation id -> 8 single-hop demonstrations
    cloze_templates: dict[str, str]  # relation id -> "[X] ... __"
    question_templates: dict[str, str]  # relation id -> "... [X] ...?"


def _text_map(path: Path) -> dict[str, str]:
    table = json_object(path)
    return {key: table.text(key) for key in table.data}


def load_mquake_prompts(path: Path) -> MquakePrompts:
    """Read the prompt files from the mquake folder (or its prompts/ folder)."""
    folder = Path(path)
    folder = folder / PROMPTS_DIR if (folder / PROMPTS_DIR).is_dir() else folder
    return MquakePrompts(
        multihop=(folder / "multihop-prompts.txt").read_text(encoding="utf-8"),
        multihop_cot=(folder / "multihop-cot-prompts.txt").read_text(encoding="utf-8"),
        mello=(folder / "MeLLo-prompt.txt").read_text(encoding="utf-8"),
        rel_prompts=_text_map(folder / "rel-prompts.json"),
        cloze_templates=_text_map(folder / "templates" / "cloze_templates.json"),
        question_templates=_text_map(folder / "templates" / "question_templates.json"),
    )
