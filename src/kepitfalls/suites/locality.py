"""The locality suite: Other-Attribution (OA), Distract-Neighbor (DN) and Other-Task (OT) of Yao et al. 2023.

Yao et al.'s OA and DN files exist only in EasyEdit's Google Drive bundle, so both sets are constructed
(`kepitfalls.data.locality`): OA from KnowEdit's zsRE test file (other relations of the edited subject,
`Relation_Specificity`), DN from ROME-schema CounterFact records with CounterFact+'s distracting prompts
(`"{rewrite prompt} {target_new}. " + neighbourhood prompt`, continued with the neighbours' true object).
Each OA and DN record is edited alone and reverted; its probes score LocAgree against the unedited argmax
ids (computed once, in `pre_scores`). After every edit the model also answers a fixed, seeded PIQA
subsample (`piqa_size` items, the selection's shared part: `LocalitySelection.piqa`, stored apart from the
records): OT is the accuracy averaged over the edits, OT_pre the unedited accuracy.

OA records whose zsRE question does not contain the subject (3 of 1,304) are left out: the locate-then-edit
methods need the subject marked in the edit prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import PositiveInt

from kepitfalls.data.counterfact import load_counterfact
from kepitfalls.data.locality import distract_neighbor, other_attribution
from kepitfalls.data.piqa import PiqaRecord, load_piqa
from kepitfalls.data.records import Probe, select_subset
from kepitfalls.data.zsre import load_knowedit_zsre
from kepitfalls.deltas.codecs import Delta
from kepitfalls.requests import EditRequest
from kepitfalls.metrics.locality import (
    COLUMNS,
    EditScores,
    loc_agree,
    locality_metrics,
    locality_records,
    piqa_accuracy,
)
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.schema import Section
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.scoring.primitives import TeacherForced, teacher_forced
from kepitfalls.suites.common import EditCase, PreScores, Selection, SuiteConfig, applied, select_records

BATCH = 16  # PIQA solutions reach ~100 tokens: keeps a batch's logits under ~0.5 GB on a 50k vocabulary


class Files(Section):
    """The source of each column, relative to the raw benchmark root."""

    OA: str
    DN: str
    OT: str


class Config(SuiteConfig):
    """`suites.locality`: `subset_size` records per column (OA, DN), `piqa_size` PIQA items re-scored per edit."""

    files: Files
    piqa_size: PositiveInt

PROTOCOL = (
    "Locality (Yao et al. 2023, EasyEdit): one edit at a time, reverted after each; OA/DN = 100 x LocAgree (share "
    "of teacher-forced positions of ' ' + continuation whose argmax the edit leaves unchanged), mean over prompts "
    "then records, on constructed sets since Yao et al.'s files are unavailable (OA: KnowEdit zsRE "
    "Relation_Specificity probes of the edited subject; DN: CounterFact+ distracting prompts on the One-Hop "
    "CounterFact records). OT = PIQA accuracy after each edit on a fixed seeded subsample, lm-eval piqa 'acc' "
    "(larger sum of log p(' ' + sol | 'Question: {goal}\\nAnswer:')), Yao et al.'s PIQA protocol being unverified; "
    "OT_pre unedited, OT_ratio = OT / OT_pre."
)


@dataclass(frozen=True)
class LocalityRecord:
    """An OA or DN edit with its probes."""

    column: str  # "OA" or "DN"
    case_id: int
    request: EditRequest
    probes: tuple[Probe, ...] = ()  # answers are teacher-forcing text only; LocAgree never compares against them
    constructed: bool = True

    @property
    def key(self) -> str:
        return f"{self.column}/{self.case_id}"


@dataclass(frozen=True)
class LocalitySelection(Selection):
    """The OA/DN records, each edited alone, and the PIQA subsample every edit is re-scored on (OT)."""

    records: tuple[LocalityRecord, ...]
    piqa: tuple[PiqaRecord, ...]

    def __len__(self) -> int:
        return len(self.records)


RECORD_TYPE = LocalitySelection


def _editable(request: EditRequest) -> bool:
    """Whether the edit prompt marks the subject exactly once (ROME, MEMIT and KN locate it)."""
    return request.prompt.count("{}") == 1


def _pool(raw_root: Path, files: dict[str, str], column: str) -> list[LocalityRecord]:
    if column == "OA":
        built = [
            LocalityRecord("OA", r.case_id, r.request, r.probes)
            for r in other_attribution(load_knowedit_zsre(raw_root / files["OA"]))
        ]
    else:
        built = [
            LocalityRecord("DN", r.case_id, r.request, tuple(Probe(p, r.continuation) for p in r.prompts))
            for r in distract_neighbor(load_counterfact(raw_root / files["DN"]))
        ]
    return [r for r in built if _editable(r.request)]


def select(lm: LoadedModel, raw_root: Path, config: Config) -> LocalitySelection:
    """A seeded subset of `subset_size` records per column (OA, DN), and the seeded PIQA subsample."""
    files = config.files.model_dump()
    records: list[LocalityRecord] = []
    for column in COLUMNS:
        records.extend(select_records(lm, _pool(raw_root, files, column), config, lambda r: [r.request]))
    piqa = select_subset(load_piqa(raw_root / config.files.OT), config.piqa_size, config.seed)
    return LocalitySelection(tuple(records), tuple(piqa))


def edit_cases(selection: LocalitySelection) -> list[EditCase]:
    """One independent edit per OA/DN record."""
    return [EditCase(r.key, (r.request,)) for r in selection.records]


def _forced(lm: LoadedModel, pairs: Sequence[tuple[str, str]]) -> list[TeacherForced]:
    """Teacher-forced results in input order, computed in batches of similar length (less padding)."""
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results = teacher_forced(lm.model, lm.tokenizer, [pairs[i][0] for i in order], [pairs[i][1] for i in order], batch_size=BATCH)
    out: list[TeacherForced | None] = [None] * len(pairs)
    for i, result in zip(order, results):
        out[i] = result
    return out  # type: ignore[return-value]


def _argmax_ids(lm: LoadedModel, record: LocalityRecord) -> list[list[int]]:
    """Teacher-forced argmax ids of each probe of one record.

    Always one call per record, before and after the edit alike: the same batch composition gives
    bit-identical logits for an unchanged model, so floating-point noise never flips a near-tied argmax.
    """
    return [r.argmax_ids for r in _forced(lm, [(p.prompt, p.answer) for p in record.probes])]


def _piqa_logliks(lm: LoadedModel, piqa: Sequence[PiqaRecord]) -> list[tuple[float, float]]:
    """(Σ log p(" " + sol1 | context), Σ log p(" " + sol2 | context)) per item, context "Question: {goal}\\nAnswer:"."""
    pairs = [(f"Question: {item.goal}\nAnswer:", sol) for item in piqa for sol in item.solutions]
    sums = [sum(r.token_logprobs) for r in _forced(lm, pairs)]
    return [(sums[k], sums[k + 1]) for k in range(0, len(sums), 2)]


def pre_scores(lm: LoadedModel, selection: LocalitySelection) -> PreScores:
    """The unedited argmax ids of every probe (one tensor per record, probes concatenated) and PIQA log-likelihoods."""
    tensors = {r.key: torch.tensor([i for ids in _argmax_ids(lm, r) for i in ids], dtype=torch.long) for r in selection.records}
    return PreScores(values={"piqa_logliks": _piqa_logliks(lm, selection.piqa)}, tensors=tensors)


def _edit_scores(lm: LoadedModel, record: LocalityRecord, pre_ids: torch.Tensor, piqa: Sequence[PiqaRecord]) -> EditScores:
    """LocAgree of each probe against its unedited argmax ids, and PIQA accuracy, on the edited model."""
    post = _argmax_ids(lm, record)
    if sum(len(ids) for ids in post) != len(pre_ids):
        raise ValueError(f"{record.key}: the unedited argmax ids do not match the probes' lengths")
    agreement, start = [], 0
    for ids in post:
        agreement.append(loc_agree(pre_ids[start : start + len(ids)].tolist(), ids))
        start += len(ids)
    accuracy = piqa_accuracy(_piqa_logliks(lm, piqa), [item.label for item in piqa])
    return EditScores(record.column, tuple(agreement), accuracy)


def items(selection: LocalitySelection) -> list[tuple[LocalityRecord, tuple[PiqaRecord, ...]]]:
    """What `score` takes, one at a time: each OA/DN record with the PIQA subsample it is re-scored on."""
    return [(record, selection.piqa) for record in selection.records]


def score(
    lm: LoadedModel, item: tuple[LocalityRecord, tuple[PiqaRecord, ...]], deltas: Mapping[str, Delta], pre: PreScores
) -> tuple[EditScores, dict[str, list[float]]]:
    """Edit, score and revert one OA/DN record: its scores and its installed components' diagnostics."""
    record, piqa = item
    with applied(lm, deltas, [record.key]):
        return (_edit_scores(lm, record, pre.tensors[record.key], piqa),
                prompt_diagnostics(lm, {record.column: [p.prompt for p in record.probes]}))


def summarise(
    lm: LoadedModel, selection: LocalitySelection, scored: list[tuple[EditScores, dict[str, list[float]]]], pre: PreScores
) -> Evaluation:
    """OA, DN, OT, OT_pre, OT_ratio and the diagnostics, with per-edit rows."""
    edits, diagnostics = [e for e, _ in scored], [d for _, d in scored]
    labels = [item.label for item in selection.piqa]
    ot_pre = piqa_accuracy([tuple(pair) for pair in pre.values["piqa_logliks"]], labels)
    keys = [r.key for r in selection.records]
    return Evaluation(locality_metrics(edits, ot_pre), locality_records(edits, keys)).with_diagnostics(keys, diagnostics)


def evaluate(lm: LoadedModel, selection: LocalitySelection, deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every OA/DN record scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, selection, [score(lm, item, deltas, pre) for item in items(selection)], pre)
