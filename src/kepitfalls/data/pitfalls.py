"""ConflictEdit and RoundEdit (Li et al. 2024, "Unveiling the Pitfalls of Knowledge Editing").

Both come per model (GPT-J, GPT2-XL folders), with relation-keyed paraphrase files (conflict_prompts.json,
round_prompts.json) used to average each score over the rewrite prompt plus 10 paraphrases.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .records import Fields, json_object, json_records, resolve

MODELS = ("GPT-J", "GPT2-XL")
CONFLICT_KINDS = ("reverse", "composite", "coverage")
ROUND_KINDS = ("easy", "hard")
PROMPT_KINDS = ("conflict", "round")
BENCHMARK = "pitfalls_conflictedit_roundedit"  # the registry's folder under data/raw


@dataclass(frozen=True)
class Relation:
    id: str
    prompt: str  # template; "{}" marks the subject
    query: str
    label: str


@dataclass(frozen=True)
class Entity:
    id: str
    label: str


@dataclass(frozen=True)
class Triple:
    relation: Relation
    subject: Entity
    object: Entity


@dataclass(frozen=True)
class ConflictEdit:
    relation: Relation
    subject: Entity
    object: Entity  # the object before this edit
    new_object: Entity
    true_object: Entity | None = None  # GPT2-XL composite only: the object implied by the first edit


@dataclass(frozen=True)
class ConflictEditRecord:
    case_id: int  # position in the file
    type: str  # reverse | composite | coverage
    rule: str | None  # e.g. "P800>P170"; coverage files have none
    triples: tuple[Triple, ...]
    prerequisites: tuple[int, ...]  # composite: index of the tied fact in `triples`
    edits: tuple[ConflictEdit, ConflictEdit]


@dataclass(frozen=True)
class RoundEdit:
    relation: Relation
    subject: Entity
    new_object: Entity  # o*: the intermediate object of the first edit
    object: Entity  # o: the object the second edit returns to


@dataclass(frozen=True)
class RoundEditRecord:
    case_id: int  # position in the file
    type: str  # "1-N@Pxxx"
    edit: RoundEdit
    true_objects: tuple[Entity, ...]


def _relation(f: Fields) -> Relation:
    return Relation(f.text("id"), f.text("prompt"), f.text("query"), f.text("label"))


def _entity(f: Fields) -> Entity:
    return Entity(f.text("id"), f.text("label"))


def _triple(f: Fields) -> Triple:
    return Triple(_relation(f.obj("relation")), _entity(f.obj("subject")), _entity(f.obj("object")))


def _conflict_edit(f: Fields) -> ConflictEdit:
    return ConflictEdit(
        relation=_relation(f.obj("relation")),
        subject=_entity(f.obj("subject")),
        object=_entity(f.obj("object")),
        new_object=_entity(f.obj("new_object")),
        true_object=_entity(f.obj("true_object")) if f.has("true_object") else None,
    )


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")
    return value


def load_conflict_edit(path: Path, model: str = "GPT-J", kind: str = "reverse") -> list[ConflictEditRecord]:
    """Read <kind>_edit.json (a file, or the benchmark folder plus model and kind)."""
    relpath = f"{_check_choice(model, MODELS, 'model')}/{_check_choice(kind, CONFLICT_KINDS, 'kind')}_edit.json"
    records = []
    for f in json_records(resolve(path, relpath)):
        edits = f.objs("edits")
        if len(edits) != 2:
            raise f.error("edits", f"expected 2 edits, got {len(edits)}")
        triples = tuple(_triple(t) for t in f.objs("triples"))
        prerequisites = f.integers("prerequisites")
        for i, index in enumerate(prerequisites):
            if not 0 <= index < len(triples):
                raise f.error(f"prerequisites[{i}]", f"index {index} is outside the {len(triples)} triples")
        records.append(ConflictEditRecord(
            case_id=f.index,
            type=f.text("type"),
            rule=f.optional_text("rule"),
            triples=triples,
            prerequisites=prerequisites,
            edits=(_conflict_edit(edits[0]), _conflict_edit(edits[1])),
        ))
    return records


def load_round_edit(path: Path, model: str = "GPT-J", kind: str = "easy") -> list[RoundEditRecord]:
    """Read easy.json / hard.json (a file, or the benchmark folder plus model and kind)."""
    relpath = f"{_check_choice(model, MODELS, 'model')}/{_check_choice(kind, ROUND_KINDS, 'kind')}.json"
    records = []
    for f in json_records(resolve(path, relpath)):
        edit = f.obj("edit")
        records.append(RoundEditRecord(
            case_id=f.index,
            type=f.text("type"),
            edit=RoundEdit(
                relation=_relation(edit.obj("relation")),
                subject=_entity(edit.obj("subject")),
                new_object=_entity(edit.obj("new_object")),
                object=_entity(edit.obj("object")),
            ),
            true_objects=tuple(_entity(e) for e in f.objs("true_objects")),
        ))
    return records


def load_relation_prompts(path: Path, model: str = "GPT-J", kind: str = "conflict") -> dict[str, tuple[str, ...]]:
    """Read conflict_prompts.json / round_prompts.json (a file, or the folder plus model and kind)."""
    relpath = f"{_check_choice(model, MODELS, 'model')}/{_check_choice(kind, PROMPT_KINDS, 'kind')}_prompts.json"
    table = json_object(resolve(path, relpath))
    return {relation: table.texts(relation) for relation in table.data}


def load_pitfalls(folder: Path, model: str, kinds: Sequence[str], task: str) -> tuple[dict[str, tuple[str, ...]], list[tuple[str, list[Any]]]]:
    """What a ConflictEdit (`task` "conflict") or RoundEdit ("round") suite selects from: the task's relation
    paraphrases, and every record of each of `kinds` as (kind, records), read from `<folder>/<model>/`.
    """
    load = load_conflict_edit if _check_choice(task, PROMPT_KINDS, "task") == "conflict" else load_round_edit
    return load_relation_prompts(folder, model, task), [(kind, load(folder, model, kind)) for kind in kinds]
