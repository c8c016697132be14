"""The RoundEdit suite: Success, Distortion, Ignore Rate and Failure Rate (METRICS.md §3.2).

Follows `zjunlp/PitfallsKnowledgeEditing` `experiments/evaluate_roundedit.py`: per record, e1 = (s, r,
o → o*) on θ0 (case `<kind>/<i>/e1`), then e2 = (s, r, o* → o) on θ1 (case `<kind>/<i>/e2`, base e1).
θ2 is scored on o*, o and the other true objects (the reference's `targets = [target_true, target_new] +
true_objects minus target_new`); θ1 on o and o*; the unedited θ0 on o and the others once per suite (the
reference's separate `evaluate_model.py` run). A score S is the mean P̄ of an object over the rewrite
prompt plus the relation's 10 paraphrases (`round_prompts.json`), which each record carries with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from kepitfalls.data.pitfalls import ROUND_KINDS, RoundEditRecord, load_pitfalls
from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.records import Evaluation
from kepitfalls.metrics.round import RoundScores, round_metrics, round_records
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest, fill
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.suites.common import EditCase, PitfallsConfig, PreScores, applied, paraphrase_scores, select_records


class Config(PitfallsConfig):
    """`suites.round`: which of the RoundEdit kinds to draw `subset_size` records from."""

    kinds: Annotated[list[Literal[ROUND_KINDS]], Field(min_length=1)]

PROTOCOL = (
    "RoundEdit (Li et al. 2024), following zjunlp/PitfallsKnowledgeEditing evaluate_roundedit.py and "
    "summarize.py: per record o→o* then o*→o as two sequential single-fact edits, reverted per record; S = "
    "mean P̄ over the rewrite prompt plus 10 relation paraphrases (GPT-J data files). D is the reference's "
    "JS/n (KLDivLoss batchmean on a 1-D tensor), D_js the true JS in nats; all ×100; the unprefixed columns "
    "pool easy and hard records (which split the survey copied is unverified)."
)


@dataclass(frozen=True)
class RoundItem:
    """One RoundEdit record with the 10 paraphrase templates of its relation."""

    kind: str  # easy | hard (the file it came from)
    record: RoundEditRecord
    paraphrases: tuple[str, ...]

    @property
    def case_prefix(self) -> str:
        return f"{self.kind}/{self.record.case_id}"


RECORD_TYPE = RoundItem


def others(record: RoundEditRecord) -> list[str]:
    """The true objects' labels with the first occurrence of o removed (the reference's `list.remove`)."""
    labels = [o.label for o in record.true_objects]
    labels.remove(record.edit.object.label)
    return labels


def select(lm: LoadedModel, raw_root: Path, config: Config) -> list[RoundItem]:
    """A seeded subset of `subset_size` records from each kind's file, with their relation's paraphrases; with
    `known_only`, of the records whose original fact (s, r, o) the model knows."""
    prompts, pools = load_pitfalls(raw_root / config.benchmark, config.model_folder, config.kinds, "round")
    chosen = [(kind, r) for kind, pool in pools for r in select_records(lm, pool, config, lambda r: requests(r)[:1])]
    items: list[RoundItem] = []
    for kind, record in chosen:
        relation = record.edit.relation.id
        if relation not in prompts:
            raise KeyError(f"{kind} record {record.case_id}: no paraphrases for relation {relation}")
        if record.edit.object.label not in [o.label for o in record.true_objects]:
            raise ValueError(f"{kind} record {record.case_id}: the object is not among the true objects")
        items.append(RoundItem(kind, record, prompts[relation]))
    return items


def requests(record: RoundEditRecord) -> tuple[EditRequest, EditRequest]:
    """e1 = (s, r, o → o*) and e2 = (s, r, o* → o)."""
    e = record.edit
    return (
        EditRequest(e.relation.prompt, e.subject.label, e.new_object.label, e.object.label),
        EditRequest(e.relation.prompt, e.subject.label, e.object.label, e.new_object.label),
    )


def edit_cases(items: list[RoundItem]) -> list[EditCase]:
    """e1, then e2 computed on e1."""
    cases: list[EditCase] = []
    for item in items:
        e1, e2 = requests(item.record)
        cases.append(EditCase(f"{item.case_prefix}/e1", (e1,)))
        cases.append(EditCase(f"{item.case_prefix}/e2", (e2,), base=f"{item.case_prefix}/e1"))
    return cases


def _prompts(item: RoundItem) -> list[str]:
    """The relation's prompt then its paraphrases, each filled with the edited subject."""
    edit = item.record.edit
    return [fill(t, edit.subject.label) for t in (edit.relation.prompt, *item.paraphrases)]


def _diagnostics(lm: LoadedModel, item: RoundItem, state: str) -> dict[str, list[float]]:
    """The installed components' diagnostics on the record's prompt sets in one model state (θ1, θ2)."""
    filled = _prompts(item)
    return prompt_diagnostics(lm, {f"{state}_rewrite": filled[:1], f"{state}_paraphrase": filled[1:]})


def scores(lm: LoadedModel, pairs: list[tuple[RoundItem, str]]) -> list[float]:
    """S of every (item, object label) on the current model, in one teacher-forced call."""
    return paraphrase_scores(lm, [(_prompts(item), target) for item, target in pairs])


def _theta2_labels(item: RoundItem) -> list[str]:
    """The objects scored after the round trip: o*, o, then the others (the reference's target order)."""
    edit = item.record.edit
    return [edit.new_object.label, edit.object.label, *others(item.record)]


def pre_scores(lm: LoadedModel, items: list[RoundItem]) -> PreScores:
    """S_θ0 of o*, o and every other true object, by case prefix.

    Each record is scored in the very call it gets on θ2 (same prompts, targets and batch), so a model the
    edits leave unchanged scores bit-identically before and after, and IR's strict `>` sees no batching noise.
    """
    values: dict[str, dict[str, Any]] = {}
    for item in items:
        s = scores(lm, [(item, label) for label in _theta2_labels(item)])
        values[item.case_prefix] = {"intermediate": s[0], "original": s[1], "others": s[2:]}
    return PreScores(values={"theta0": values})


def items(records: list[RoundItem]) -> list[RoundItem]:
    """What `score` takes, one at a time: every record."""
    return records


def score(lm: LoadedModel, item: RoundItem, deltas: Mapping[str, Delta], pre: PreScores) -> tuple[RoundScores, dict[str, list[float]]]:
    """One record on θ2 then θ1, reverting in between: its scores and its installed components' diagnostics
    (per state and prompt set: theta2_rewrite, theta2_paraphrase, theta1_...)."""
    prefix, edit = item.case_prefix, item.record.edit
    with applied(lm, deltas, [f"{prefix}/e1", f"{prefix}/e2"]):
        theta2 = scores(lm, [(item, label) for label in _theta2_labels(item)])
        diagnostics = _diagnostics(lm, item, "theta2")
    with applied(lm, deltas, [f"{prefix}/e1"]):
        theta1 = scores(lm, [(item, edit.object.label), (item, edit.new_object.label)])
        diagnostics |= _diagnostics(lm, item, "theta1")
    theta0 = pre.values["theta0"][prefix]
    return RoundScores(
        kind=item.kind,
        theta1_intermediate=theta1[1],
        theta1_original=theta1[0],
        theta2_original=theta2[1],
        theta2_intermediate=theta2[0],
        theta2_others=tuple(theta2[2:]),
        theta0_original=theta0["original"],
        theta0_others=tuple(theta0["others"]),
    ), diagnostics


def summarise(
    lm: LoadedModel, records: list[RoundItem], scored: list[tuple[RoundScores, dict[str, list[float]]]], pre: PreScores
) -> Evaluation:
    """The suite's metrics, pooled and per kind, and the diagnostics, with per-record rows."""
    cases, diagnostics = [c for c, _ in scored], [d for _, d in scored]
    ids = [item.case_prefix for item in records]
    return Evaluation(round_metrics(cases), round_records(cases, ids)).with_diagnostics(ids, diagnostics)


def evaluate(lm: LoadedModel, records: list[RoundItem], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every record scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, records, [score(lm, item, deltas, pre) for item in items(records)], pre)
