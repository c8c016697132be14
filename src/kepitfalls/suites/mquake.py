"""The MQuAKE suite: edit-wise, instance-wise and multi-hop accuracy (Zhong et al. 2023; METRICS.md §2.2).

One case per instance holds ALL its requested edits (k = 1 instance, as MQuAKE's main table); the method
edits them together or one after another, as it does. Every score is a greedy generation
(`scoring.primitives.greedy_generate`) matched against the answer and its aliases by
`metrics.mquake`:
- EW: the bare cloze `prompt.format(subject)` of each requested edit, against `target_new`;
- IW: every fact of the new chain: an edited fact through its cloze, an unedited one through its
  question after the relation's 8 demonstrations of `prompts/rel-prompts.json` (a relation that file
  lacks gets the 16 multi-hop demonstrations instead);
- MH: `{multihop-prompts.txt}\\nQ: {question} A:` for each of the 3 questions;
- MH_cot: `{multihop-cot-prompts.txt}\\n\\nQuestion: {question}\\nThoughts:`.
MH_pre is MH of the unedited model against the ORIGINAL answer (a sanity check of the prompts).

Where a few-shot prompt plus the generated tokens exceeds the model's context (only tiny test models;
SmolLM2 has 8k), whole demonstrations are dropped from the front until it fits; `pre` counts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pydantic import PositiveInt

from kepitfalls.data.mquake import MquakePrompts, MquakeRecord, load_mquake, load_mquake_prompts
from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.mquake import Attempt, Hop, InstanceScores, mquake_metrics, mquake_records, multi_hop, question_records
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.progress import progress
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.scoring.primitives import greedy_generate
from kepitfalls.suites.common import EditCase, PreScores, SuiteConfig, applied, select_records
from kepitfalls.tokens import prompt_ids


class Config(SuiteConfig):
    """`suites.mquake`: the MQuAKE `file` under the benchmark folder and the generation lengths."""

    file: str
    max_new_tokens: PositiveInt
    cot_max_new_tokens: PositiveInt

MULTIHOP_SEP = "\n"  # between the one-line "Q: ... A: ..." demonstrations
COT_SEP = "\n\n"  # between the chain-of-thought demonstrations


@dataclass(frozen=True)
class MquakeCase:
    """One MQuAKE instance with everything its evaluation needs (prompts and generation lengths)."""

    record: MquakeRecord
    hop_edit: tuple[int | None, ...]  # per new-chain fact: the index of the requested edit it is, or None
    hop_demos: tuple[str, ...]  # per new-chain fact: its relation's demonstrations ("" for edited facts)
    multihop_demos: str
    cot_demos: str
    max_new_tokens: int  # clozes and plain few-shot answers
    cot_max_new_tokens: int


RECORD_TYPE = MquakeCase
PROTOCOL = (
    "MQuAKE (Zhong et al. 2023; princeton-nlp/MQuAKE prompts/; MQuAKE-hard subset of MQuAKE-CF unless the official "
    "file is configured): all edits of an instance in one case, reverted after it; greedy generation, "
    "SQuAD-normalised match against answer + aliases: EW = cloze of each edit "
    "(prefix match), IW = every new-chain fact (edited: cloze, prefix; unedited: question after the relation's "
    "8 rel-prompt demos, exact), MH = any of 3 questions after the 16 multihop demos (exact, first line), "
    "MH_cot = CoT prompt, text after the last 'Answer:'. Matching and prompt joins are unverified in the "
    "reference (no baseline evaluation code); *_contains variants give looser matching."
)


def _hop_edits(record: MquakeRecord) -> tuple[int | None, ...]:
    """For each fact of the new chain, which requested edit wrote it (matched by its Wikidata triple)."""
    found: list[int | None] = []
    for triple in record.new_triples:
        if triple not in record.edit_triples:
            found.append(None)
            continue
        j = record.edit_triples.index(triple)
        if j >= len(record.requested_rewrite):
            raise ValueError(f"MQuAKE case {record.case_id}: edit triple {j} has no requested_rewrite entry")
        edit = record.requested_rewrite[j]
        if (edit.relation_id, edit.target_new_id) != triple[1:]:
            raise ValueError(f"MQuAKE case {record.case_id}: edit_triples[{j}] {triple} is not requested_rewrite[{j}]")
        found.append(j)
    if len(found) != len(record.new_single_hops):
        raise ValueError(f"MQuAKE case {record.case_id}: {len(found)} new triples but {len(record.new_single_hops)} new hops")
    return tuple(found)


def build_case(record: MquakeRecord, prompts: MquakePrompts, max_new_tokens: int, cot_max_new_tokens: int) -> MquakeCase:
    """Bundle a record with its prompts: each unedited new-chain fact gets its relation's demonstrations."""
    if max_new_tokens < 1 or cot_max_new_tokens < 1:
        raise ValueError(f"max_new_tokens and cot_max_new_tokens must be positive, got {max_new_tokens}, {cot_max_new_tokens}")
    hop_edit = _hop_edits(record)
    demos = tuple(
        "" if j is not None else prompts.rel_prompts.get(triple[1], prompts.multihop)
        for j, triple in zip(hop_edit, record.new_triples)
    )
    return MquakeCase(record, hop_edit, demos, prompts.multihop, prompts.multihop_cot, max_new_tokens, cot_max_new_tokens)


def select(lm: LoadedModel, raw_root: Path, config: Config) -> list[MquakeCase]:
    """A seeded subset of `subset_size` instances of `file` (MQuAKE-hard by default), with the official
    prompts; with `known_only`, of the instances whose every requested edit's original fact the model knows."""
    folder = raw_root / config.benchmark
    pool = load_mquake(folder / config.file)
    prompts = load_mquake_prompts(folder)
    chosen = select_records(lm, pool, config, requests)
    return [build_case(r, prompts, config.max_new_tokens, config.cot_max_new_tokens) for r in chosen]


def requests(record: MquakeRecord) -> tuple[EditRequest, ...]:
    """The instance's requested edits, in the file's order."""
    return tuple(EditRequest(e.prompt, e.subject, e.target_new, e.target_true) for e in record.requested_rewrite)


def edit_cases(records: list[MquakeCase]) -> list[EditCase]:
    """One case per instance with all its requested edits, in the file's order."""
    return [EditCase(str(c.record.case_id), requests(c.record)) for c in records]


def _context_limit(lm: LoadedModel) -> int | None:
    config = lm.model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def few_shot(lm: LoadedModel, demos: str, sep: str, query: str, new_tokens: int) -> tuple[str, int]:
    """`demos + sep + query`, dropping whole demonstrations from the front until it fits the context.

    Returns the prompt and how many demonstrations were dropped.
    """
    units = [u for u in demos.strip("\n").split(sep) if u.strip()]
    limit = _context_limit(lm)
    dropped = 0
    while True:
        prompt = sep.join(units) + sep + query if units else query
        if limit is None or not units or len(prompt_ids(lm.tokenizer, prompt)) + new_tokens <= limit:
            return prompt, dropped
        units.pop(0)
        dropped += 1


def _question(question: str) -> str:
    return f"Q: {question} A:"


def _cot_question(question: str) -> str:
    return f"Question: {question}\nThoughts:"


@dataclass(frozen=True)
class _Prompts:
    clozes: tuple[str, ...]  # one per requested edit
    hop_questions: tuple[str, ...]  # one per unedited new-chain fact
    questions: tuple[str, ...]
    cot: tuple[str, ...]
    dropped: int


def _prompts(lm: LoadedModel, case: MquakeCase) -> _Prompts:
    record, n = case.record, case.max_new_tokens
    built_hops = [
        few_shot(lm, demos, MULTIHOP_SEP, _question(hop.question), n)
        for j, demos, hop in zip(case.hop_edit, case.hop_demos, record.new_single_hops)
        if j is None
    ]
    built_q = [few_shot(lm, case.multihop_demos, MULTIHOP_SEP, _question(q), n) for q in record.questions]
    built_cot = [few_shot(lm, case.cot_demos, COT_SEP, _cot_question(q), case.cot_max_new_tokens) for q in record.questions]
    return _Prompts(
        clozes=tuple(e.cloze for e in record.requested_rewrite),
        hop_questions=tuple(p for p, _ in built_hops),
        questions=tuple(p for p, _ in built_q),
        cot=tuple(p for p, _ in built_cot),
        dropped=sum(d for _, d in (*built_hops, *built_q, *built_cot)),
    )


def _generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    if not prompts:
        return []
    return greedy_generate(lm.model, lm.tokenizer, list(prompts), max_new_tokens, batch_size=len(prompts))


def _edit_answers(case: MquakeCase) -> list[tuple[str, ...]]:
    """target_new of each edit, plus the aliases of the new-chain fact it wrote (when it is in the chain)."""
    answers = [(e.target_new,) for e in case.record.requested_rewrite]
    for j, hop in zip(case.hop_edit, case.record.new_single_hops):
        if j is not None:
            answers[j] = (answers[j][0], *hop.answer_alias)
    return answers


def _instance_scores(lm: LoadedModel, case: MquakeCase) -> tuple[InstanceScores, dict[str, list[float]]]:
    """All generations of one instance on the current (edited) model (3 batched generate calls), and its
    installed components' diagnostics on each prompt set."""
    record, p = case.record, _prompts(lm, case)
    diagnostics = prompt_diagnostics(lm, {"cloze": p.clozes, "hop": p.hop_questions, "question": p.questions, "cot": p.cot})
    # Short clozes in their own call, so they are not left-padded to the length of the few-shot prompts.
    clozes = _generate(lm, p.clozes, case.max_new_tokens)
    plain = _generate(lm, (*p.hop_questions, *p.questions), case.max_new_tokens)
    cot = _generate(lm, p.cot, case.cot_max_new_tokens)
    hop_gens, question_gens = plain[: len(p.hop_questions)], plain[len(p.hop_questions) :]
    edits = tuple(Attempt(g, a) for g, a in zip(clozes, _edit_answers(case)))
    hops, unedited = [], iter(hop_gens)
    for j, hop in zip(case.hop_edit, record.new_single_hops):
        answers = (hop.answer, *hop.answer_alias)
        generation = clozes[j] if j is not None else next(unedited)
        hops.append(Hop(Attempt(generation, answers), edited=j is not None))
    new_answers = (record.new_answer, *record.new_answer_alias)
    return InstanceScores(
        edits=edits,
        hops=tuple(hops),
        questions=tuple(Attempt(g, new_answers) for g in question_gens),
        cot=tuple(Attempt(g, new_answers) for g in cot),
    ), diagnostics


def pre_scores(lm: LoadedModel, records: list[MquakeCase]) -> PreScores:
    """The unedited model's answers to the multi-hop questions, and the demonstrations dropped to fit.

    Only generations are stored: matching them (MH_pre) is metric code, applied in `evaluate`, so a change
    of matching re-runs evaluation but never this stage.
    """
    dropped, generations = 0, {}
    for case in progress(records, "pre mquake", lambda c: str(c.record.case_id)):
        p = _prompts(lm, case)
        dropped += p.dropped
        generations[str(case.record.case_id)] = _generate(lm, p.questions, case.max_new_tokens)
    return PreScores(values={"demos_dropped": dropped, "generations": generations})


def _unedited_attempts(records: list[MquakeCase], pre: PreScores) -> list[tuple[Attempt, ...]]:
    """The unedited answers to each instance's questions, against its ORIGINAL answer and aliases."""
    generations = pre.values["generations"]
    return [
        tuple(Attempt(g, (c.record.answer, *c.record.answer_alias)) for g in generations[str(c.record.case_id)])
        for c in records
    ]


def items(records: list[MquakeCase]) -> list[MquakeCase]:
    """What `score` takes, one at a time: every record."""
    return records


def score(lm: LoadedModel, case: MquakeCase, deltas: Mapping[str, Delta], pre: PreScores) -> tuple[InstanceScores, dict[str, list[float]]]:
    """Apply one instance's delta, generate every answer, revert: its scores and its installed components'
    diagnostics (per prompt set: cloze, hop, question, cot)."""
    with applied(lm, deltas, [str(case.record.case_id)]):
        return _instance_scores(lm, case)


def summarise(
    lm: LoadedModel, records: list[MquakeCase], scored: list[tuple[InstanceScores, dict[str, list[float]]]], pre: PreScores
) -> Evaluation:
    """The suite's metrics with the unedited MH_pre and the diagnostics, and the per-instance rows."""
    instances, diagnostics = [i for i, _ in scored], [d for _, d in scored]
    unedited = _unedited_attempts(records, pre)
    ids = [str(case.record.case_id) for case in records]
    metrics = {
        **mquake_metrics(instances),
        "MH_pre": multi_hop(unedited, "exact"),
        "MH_pre_contains": multi_hop(unedited, "contains"),
    }
    rows = [
        *mquake_records(instances, ids),
        *question_records(unedited, ids, "MH_pre", "exact"),
        *question_records(unedited, ids, "MH_pre_contains", "contains"),
    ]
    return Evaluation(metrics, rows).with_diagnostics(ids, diagnostics)


def evaluate(lm: LoadedModel, records: list[MquakeCase], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every instance scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, records, [score(lm, item, deltas, pre) for item in items(records)], pre)
