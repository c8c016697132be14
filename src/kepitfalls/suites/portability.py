"""The portability suite: Subject-Replace (SR), Reverse-Relation (RR) and One-Hop (OH) of Yao et al. 2023 (METRICS.md §2.1).

Each column has its own records, read from one of Yao et al.'s portability files (EasyEdit's bundle):
`datasets` in the config picks zsRE or CounterFact per column (RR exists only for zsRE). A record is edited
alone and reverted (EasyEdit `keep_original_weight=True`); its probes are scored with TokAcc of the answer
(`" " + answer`) after the portability prompt, and with the exact match of a greedy generation as long as
the answer's tokens. The same probes are scored on the unedited model once (`SR_pre`, `SR_em_pre`, ...).

Records whose edit prompt does not mark the subject exactly once (the subject string does not occur in the
zsRE question, 4 of 293 SR and 5 of 385 RR records) are left out: the locate-then-edit methods need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kepitfalls.data.portability import PortabilityRecord, load_portability
from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.portability import (
    COLUMNS,
    RecordScores,
    exact_match,
    portability_metrics,
    portability_records,
)
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.schema import Section
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.scoring.primitives import greedy_generate, teacher_forced
from kepitfalls.suites.common import EditCase, PreScores, SuiteConfig, applied, select_records
from kepitfalls.tokens import target_ids

#: The portability kind (file) behind each survey column.
KINDS = {"SR": "subject_replace", "RR": "inverse_relation", "OH": "one_hop"}


class Datasets(Section):
    """The data set whose portability file feeds each column (see PROTOCOL); RR exists only for zsRE."""

    SR: Literal["zsre", "counterfact"]
    RR: Literal["zsre"]
    OH: Literal["zsre", "counterfact"]


class Config(SuiteConfig):
    """`suites.portability`: `subset_size` records per column."""

    datasets: Datasets


PROTOCOL = (
    "Portability (Yao et al. 2023, EasyEdit): one edit at a time, reverted after each; SR/RR/OH = 100 x mean over "
    "records of TokAcc of ' ' + answer after the portability prompt (EasyEdit a781d66/HEAD, not bc17a2f's "
    "no-space variant), *_em = exact match of a greedy generation of len(answer tokens) tokens, *_pre = unedited. "
    "All three columns use Yao et al.'s zsRE files (their split is unverified; RR exists only for zsRE, and one "
    "data set keeps edits and question-style probes alike across columns); edits whose question lacks the "
    "subject are left out."
)


@dataclass(frozen=True)
class PortabilityCase:
    """A portability record and the survey column it is scored in."""

    column: str  # "SR", "RR" or "OH"
    record: PortabilityRecord

    @property
    def case_id(self) -> str:
        return f"{self.column}/{self.record.dataset}/{self.record.case_id}"


RECORD_TYPE = PortabilityCase


def _editable(record: PortabilityRecord) -> bool:
    """Whether the edit prompt marks the subject exactly once (ROME, MEMIT and KN locate it)."""
    return record.request.prompt.count("{}") == 1


def select(lm: LoadedModel, raw_root: Path, config: Config) -> list[PortabilityCase]:
    """A seeded subset of `subset_size` editable records per column, from the data set `datasets[column]`
    (with `known_only`, of the edits whose true answer the model knows)."""
    datasets = config.datasets.model_dump()
    cases: list[PortabilityCase] = []
    for column in COLUMNS:
        pool = [r for r in load_portability(raw_root / config.benchmark, datasets[column], KINDS[column]) if _editable(r)]
        cases.extend(PortabilityCase(column, r) for r in select_records(lm, pool, config, lambda r: [r.request]))
    return cases


def edit_cases(records: list[PortabilityCase]) -> list[EditCase]:
    """One independent edit per record (a record of each column is its own case)."""
    return [EditCase(r.case_id, (r.record.request,)) for r in records]


def _raw_scores(lm: LoadedModel, record: PortabilityCase) -> dict[str, Any]:
    """Each probe's TokAcc (one teacher-forced batch) and greedy continuation (one generation per answer length)."""
    probes = record.record.probes
    forced = teacher_forced(lm.model, lm.tokenizer, [p.prompt for p in probes], [p.answer for p in probes])
    lengths = [len(target_ids(lm.tokenizer, p.answer)) for p in probes]
    generated = [""] * len(probes)
    for length in sorted(set(lengths)):
        rows = [k for k, n in enumerate(lengths) if n == length]
        texts = greedy_generate(lm.model, lm.tokenizer, [probes[k].prompt for k in rows], max_new_tokens=length)
        for k, text in zip(rows, texts):
            generated[k] = text
    return {"token_accuracy": [r.token_accuracy for r in forced], "generated": generated}


def _record_scores(record: PortabilityCase, raw: dict[str, Any]) -> RecordScores:
    answers = [p.answer for p in record.record.probes]
    return RecordScores(
        record.column,
        tuple(raw["token_accuracy"]),
        tuple(exact_match(text, answer) for text, answer in zip(raw["generated"], answers, strict=True)),
    )


def pre_scores(lm: LoadedModel, records: list[PortabilityCase]) -> PreScores:
    """The same probes on the unedited model: TokAcc and the greedy continuations.

    Scored one record per call, as `evaluate` does after the edit: the same batch composition gives
    bit-identical logits for an unchanged model, so padding noise never flips a near-tied argmax.
    """
    return PreScores(values={r.case_id: _raw_scores(lm, r) for r in records})


def items(records: list[PortabilityCase]) -> list[PortabilityCase]:
    """What `score` takes, one at a time: every record."""
    return records


def score(
    lm: LoadedModel, record: PortabilityCase, deltas: Mapping[str, Delta], pre: PreScores
) -> tuple[RecordScores, dict[str, list[float]]]:
    """Edit, score and revert one record: its scores and its installed components' diagnostics."""
    with applied(lm, deltas, [record.case_id]):
        return (_record_scores(record, _raw_scores(lm, record)),
                prompt_diagnostics(lm, {record.column: [p.prompt for p in record.record.probes]}))


def summarise(
    lm: LoadedModel, records: list[PortabilityCase], scored: list[tuple[RecordScores, dict[str, list[float]]]], pre: PreScores
) -> Evaluation:
    """SR/RR/OH (TokAcc), *_em, the unedited *_pre and the diagnostics, with per-record rows."""
    post, diagnostics = [r for r, _ in scored], [d for _, d in scored]
    unedited = [_record_scores(r, pre.values[r.case_id]) for r in records]
    ids = [r.case_id for r in records]
    return Evaluation(
        {**portability_metrics(post), **portability_metrics(unedited, suffix="_pre"), "cases": float(len(records))},
        [*portability_records(post, ids), *portability_records(unedited, ids, suffix="_pre")],
    ).with_diagnostics(ids, diagnostics)


def evaluate(lm: LoadedModel, records: list[PortabilityCase], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every record scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, records, [score(lm, item, deltas, pre) for item in items(records)], pre)
