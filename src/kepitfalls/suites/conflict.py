"""The ConflictEdit suite: reverse and composite CS/CM, tied-fact damage, coverage Success (METRICS.md §2.3).

Follows `zjunlp/PitfallsKnowledgeEditing` `experiments/evaluate_conflictedit.py`: per record, two
sequential single-fact edits, e1 on θ0 (case `<kind>/<i>/e1`) then e2 on θ1 (case `<kind>/<i>/e2`, base
e1); composite and coverage records also edit e2 alone on θ0 (case `<kind>/<i>/e2only`). Each request is
the reference's `edit(record, x)`: the edit's relation prompt and subject label, target_new = its
new_object label, target_true = its object label. Records are independent (every delta is reverted before
the next record). A fact's score S is the mean P̄ of its target over the rewrite prompt plus the
relation's 10 paraphrases (`conflict_prompts.json`), which each record carries with it.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kepitfalls.data.pitfalls import CONFLICT_KINDS, ConflictEdit, ConflictEditRecord, load_pitfalls
from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.conflict import ConflictScores, conflict_metrics, conflict_records
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest, fill
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.suites.common import EditCase, PitfallsConfig, PreScores, applied, paraphrase_scores, select_records


class Config(PitfallsConfig):
    """`suites.conflict`: which of the ConflictEdit kinds to draw `subset_size` records from."""

    kinds: Annotated[list[Literal[CONFLICT_KINDS]], Field(min_length=1)]


PROTOCOL = (
    "ConflictEdit (Li et al. 2024), following zjunlp/PitfallsKnowledgeEditing evaluate_conflictedit.py and "
    "summarize.py: per record e1 then e2 as two sequential single-fact edits (composite and coverage also e2 "
    "alone on the unedited model), reverted per record; S = mean P̄ of the target over the rewrite prompt plus "
    "10 relation paraphrases (GPT-J data files). CS is the explicit variant S_θ2(e2) > S_θ2(e1), the script's "
    "default (which variant the survey copied is unverified; the implicit one is *_CS_implicit); CM is clipped "
    "at -1, tied-fact damage is not; all ×100."
)


@dataclass(frozen=True)
class ConflictItem:
    """One ConflictEdit record with the paraphrase templates of every relation it scores."""

    kind: str  # reverse | composite | coverage (the file it came from; `KINDS` holds what each scores)
    record: ConflictEditRecord
    paraphrases: dict[str, tuple[str, ...]]  # relation id -> its 10 templates ("{}" marks the subject)

    @property
    def case_prefix(self) -> str:
        return f"{self.kind}/{self.record.case_id}"


RECORD_TYPE = ConflictItem


@dataclass(frozen=True)
class Fact:
    """What S scores: a relation template and its paraphrases, filled with a subject, and the target."""

    template: str
    relation_id: str
    subject: str
    target: str


def _edit_fact(edit: ConflictEdit) -> Fact:
    return Fact(edit.relation.prompt, edit.relation.id, edit.subject.label, edit.new_object.label)


def e1_fact(item: ConflictItem) -> Fact:
    return _edit_fact(item.record.edits[0])


def e2_fact(item: ConflictItem) -> Fact:
    return _edit_fact(item.record.edits[1])


def tied_fact(item: ConflictItem) -> Fact:
    """The composite record's tied fact triples[0] (its `prerequisites` is (0,)), scored with its own object."""
    triple = item.record.triples[0]
    return Fact(triple.relation.prompt, triple.relation.id, triple.subject.label, triple.object.label)


class Kind(ABC):
    """What one kind of record scores, each score named by its `ConflictScores` field: the facts read on θ2
    (e1's and e2's, plus the kind's own), those read on θ0 + e2 alone (a kind with none has no `e2only`
    case), and the θ0 scores it takes from the pre-scores."""

    name: ClassVar[str]
    #: `ConflictScores` field -> the θ2 field of the same fact, whose θ0 score `pre_scores` keeps.
    theta0: ClassVar[dict[str, str]] = {}

    def theta2_facts(self, item: ConflictItem) -> dict[str, Fact]:
        return {"e1_theta2": e1_fact(item), "e2_theta2": e2_fact(item)}

    def e2only_facts(self, item: ConflictItem) -> dict[str, Fact]:
        return {}


class Reverse(Kind):
    """e2 reverses e1's relation; the fact e2 implies through r1 is (r1, s2*, o1*)."""

    name = "reverse"

    def theta2_facts(self, item: ConflictItem) -> dict[str, Fact]:
        e1, e2 = item.record.edits
        implied = Fact(e1.relation.prompt, e1.relation.id, e2.new_object.label, e1.new_object.label)
        return {**super().theta2_facts(item), "implied_theta2": implied}


class Composite(Kind):
    """e2 composes with e1 through a tied fact; the implied fact is (r1, s1, o2*), and the tied fact is scored
    on θ0, θ2 and θ0 + e2."""

    name = "composite"
    theta0 = {"tied_theta0": "tied_theta2"}

    def theta2_facts(self, item: ConflictItem) -> dict[str, Fact]:
        e1, e2 = item.record.edits
        implied = Fact(e1.relation.prompt, e1.relation.id, e1.subject.label, e2.new_object.label)
        return {**super().theta2_facts(item), "implied_theta2": implied, "tied_theta2": tied_fact(item)}

    def e2only_facts(self, item: ConflictItem) -> dict[str, Fact]:
        return {"tied_e2only": tied_fact(item)}


class Coverage(Kind):
    """e2 covers e1; both facts are also scored on θ0 + e2 (coverage Success)."""

    name = "coverage"

    def e2only_facts(self, item: ConflictItem) -> dict[str, Fact]:
        return {"e1_e2only": e1_fact(item), "e2_e2only": e2_fact(item)}


#: The kinds, by the name of the file their records come from.
KINDS: dict[str, Kind] = {kind.name: kind() for kind in (Reverse, Composite, Coverage)}


def _relations(record: ConflictEditRecord) -> set[str]:
    """The relations whose paraphrases a record's scores use: both edits' and the tied fact's."""
    return {e.relation.id for e in record.edits} | {record.triples[0].relation.id}


def select(lm: LoadedModel, raw_root: Path, config: Config) -> list[ConflictItem]:
    """A seeded subset of `subset_size` records from each kind's file, with the paraphrases they need; with
    `known_only`, of the records whose first edit's original fact the model knows."""
    prompts, pools = load_pitfalls(raw_root / config.benchmark, config.model_folder, config.kinds, "conflict")
    chosen = [(kind, r) for kind, pool in pools for r in select_records(lm, pool, config, lambda r: [_request(r.edits[0])])]
    items: list[ConflictItem] = []
    for kind, record in chosen:
        missing = _relations(record) - set(prompts)
        if missing:
            raise KeyError(f"{kind} record {record.case_id}: no paraphrases for relations {sorted(missing)}")
        items.append(ConflictItem(kind, record, {r: prompts[r] for r in sorted(_relations(record))}))
    return items


def _request(edit: ConflictEdit) -> EditRequest:
    return EditRequest(edit.relation.prompt, edit.subject.label, edit.new_object.label, edit.object.label)


def edit_cases(items: list[ConflictItem]) -> list[EditCase]:
    """e1; e2 computed on e1; for composite and coverage also e2 alone."""
    cases: list[EditCase] = []
    for item in items:
        prefix = item.case_prefix
        e1, e2 = (_request(e) for e in item.record.edits)
        cases.append(EditCase(f"{prefix}/e1", (e1,)))
        cases.append(EditCase(f"{prefix}/e2", (e2,), base=f"{prefix}/e1"))
        if KINDS[item.kind].e2only_facts(item):
            cases.append(EditCase(f"{prefix}/e2only", (e2,)))
    return cases


def _prompts(item: ConflictItem, fact: Fact) -> list[str]:
    """The rewrite prompt then the 10 paraphrases, each filled with the fact's subject."""
    return [fill(t, fact.subject) for t in (fact.template, *item.paraphrases[fact.relation_id])]


def scores(lm: LoadedModel, pairs: list[tuple[ConflictItem, Fact]]) -> list[float]:
    """S of every (item, fact) on the current model, in one teacher-forced call."""
    return paraphrase_scores(lm, [(_prompts(item, fact), fact.target) for item, fact in pairs])


def _scored(lm: LoadedModel, item: ConflictItem, facts: dict[str, Fact]) -> dict[str, float]:
    """S of each named fact on the current model, by name, in one call."""
    return dict(zip(facts, scores(lm, [(item, fact) for fact in facts.values()]), strict=True))


def _diagnostics(lm: LoadedModel, item: ConflictItem, facts: dict[str, Fact]) -> dict[str, list[float]]:
    """The installed components' diagnostics on each scored fact's prompts, one prompt set per
    `ConflictScores` field `<fact>_<state>`, named `<state>_<fact>` (theta2_e1, theta2_implied, theta1_e1,
    e2only_tied, ...)."""
    named = {"_".join(reversed(field.rsplit("_", 1))): fact for field, fact in facts.items()}
    return prompt_diagnostics(lm, {name: _prompts(item, fact) for name, fact in named.items()})


def pre_scores(lm: LoadedModel, items: list[ConflictItem]) -> PreScores:
    """S_θ0 of what each kind keeps of θ0 (the composite records' tied facts), by field and case prefix.

    Each record is scored in the very call it gets on θ2 (same facts, same batch), so a model the edits
    leave unchanged gives a tied-fact damage of exactly 0.
    """
    values: dict[str, dict[str, float]] = {field: {} for kind in KINDS.values() for field in kind.theta0}
    for item in items:
        kind = KINDS[item.kind]
        if kind.theta0:
            theta0 = _scored(lm, item, kind.theta2_facts(item))
            for field, source in kind.theta0.items():
                values[field][item.case_prefix] = theta0[source]
    return PreScores(values=values)


def items(records: list[ConflictItem]) -> list[ConflictItem]:
    """What `score` takes, one at a time: every record."""
    return records


def score(lm: LoadedModel, item: ConflictItem, deltas: Mapping[str, Delta], pre: PreScores) -> tuple[ConflictScores, dict[str, list[float]]]:
    """One record on θ2, θ1 and (where its kind reads it) θ0 + e2 alone, reverting in between: its scores and
    its installed components' diagnostics per model state and fact."""
    kind, prefix = KINDS[item.kind], item.case_prefix
    with applied(lm, deltas, [f"{prefix}/e1", f"{prefix}/e2"]):
        facts = kind.theta2_facts(item)
        theta2 = _scored(lm, item, facts)
        diagnostics = _diagnostics(lm, item, facts)
    with applied(lm, deltas, [f"{prefix}/e1"]):
        (e1_theta1,) = scores(lm, [(item, e1_fact(item))])
        diagnostics |= _diagnostics(lm, item, {"e1_theta1": e1_fact(item)})
    e2only: dict[str, float] = {}
    if facts := kind.e2only_facts(item):
        with applied(lm, deltas, [f"{prefix}/e2only"]):
            e2only = _scored(lm, item, facts)
            diagnostics |= _diagnostics(lm, item, facts)
    theta0 = {field: pre.values[field][prefix] for field in kind.theta0}
    return ConflictScores(kind=item.kind, e1_theta1=e1_theta1, **theta2, **e2only, **theta0), diagnostics


def summarise(
    lm: LoadedModel, records: list[ConflictItem], scored: list[tuple[ConflictScores, dict[str, list[float]]]], pre: PreScores
) -> Evaluation:
    """The suite's metrics over the records' scores and the diagnostics, with the per-record rows."""
    cases, diagnostics = [c for c, _ in scored], [d for _, d in scored]
    ids = [item.case_prefix for item in records]
    return Evaluation(conflict_metrics(cases), conflict_records(cases, ids)).with_diagnostics(ids, diagnostics)


def evaluate(lm: LoadedModel, records: list[ConflictItem], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every record scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, records, [score(lm, item, deltas, pre) for item in items(records)], pre)
