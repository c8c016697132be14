"""The CounterFact suite: ES/PS/NS, CounterFact+ NS+/NM+ and neighbourhood KL (METRICS.md §3.3).

Records come from any ROME-schema file: by default the 1,031 One-Hop portability records of Yao et al.
(the ROME-schema CounterFact cases available offline); set `file: counterfact.json` with
`benchmark: counterfact` for ROME's original 21,919 cases. `known_only` keeps the facts the unedited model
knows (`suites.common.KNOWN_POLICY`). Distracting prompts are built as CounterFact+ does: `"{rewrite prompt} {target_new}. " +
neighbourhood prompt`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from kepitfalls.data.counterfact import CounterFactRecord, load_counterfact
from kepitfalls.data.locality import distract_neighbor
from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.counterfact import CaseScores, PromptScore, counterfact_metrics, counterfact_records, kl_divergence
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.diagnostics import prompt_diagnostics
from kepitfalls.scoring.primitives import PromptScores, score_prompts
from kepitfalls.suites.common import EditCase, PreScores, SuiteConfig, applied, select_records


class Config(SuiteConfig):
    """`suites.counterfact`: the ROME-schema `file` under the benchmark folder."""

    file: str


RECORD_TYPE = CounterFactRecord
PROTOCOL = (
    "CounterFact (Meng et al. 2022; CounterFact+ of Hoelscher-Obermaier et al. 2023): one edit at a time, "
    "reverted after each; NS/NM over the neighbourhood prompts, NS+/NM+ over the distracting prompts; NKL on "
    "the next-token distribution after each neighbourhood prompt, plain KL and /|V| as the reference code."
)


def select(lm: LoadedModel, raw_root: Path, config: Config) -> list[CounterFactRecord]:
    """A seeded subset of `subset_size` records; with `known_only`, of the facts the model knows."""
    return select_records(lm, load_counterfact(raw_root / config.benchmark / config.file), config, lambda r: [r.request])


def edit_cases(records: list[CounterFactRecord]) -> list[EditCase]:
    """One independent edit per record."""
    return [EditCase(str(r.case_id), (r.request,)) for r in records]


def _distracting(record: CounterFactRecord) -> tuple[str, ...]:
    return distract_neighbor([record])[0].prompts


def _scored(lm: LoadedModel, record: CounterFactRecord) -> list[PromptScores]:
    """The rewrite, paraphrase, neighbourhood and distracting prompts, each with both targets and its next-token
    distribution, in one call: the same call before and after the edit, so an unchanged model gives
    bit-identical distributions (NKL exactly 0)."""
    prompts = [record.rewrite_prompt, *record.paraphrase_prompts, *record.neighborhood_prompts, *_distracting(record)]
    targets = [(record.target_new, record.target_true)] * len(prompts)
    return score_prompts(lm.model, lm.tokenizer, prompts, targets, batch_size=len(prompts))


def _next_token(record: CounterFactRecord, scored: list[PromptScores]) -> torch.Tensor:
    """Next-token log-probabilities after the neighbourhood then the distracting prompts."""
    return torch.stack([s.next_token for s in scored[1 + len(record.paraphrase_prompts) :]])


def pre_scores(lm: LoadedModel, records: list[CounterFactRecord]) -> PreScores:
    """The unedited next-token distributions NKL compares against."""
    return PreScores(tensors={str(r.case_id): _next_token(r, _scored(lm, r)) for r in records})


def _case_scores(lm: LoadedModel, record: CounterFactRecord, pre: torch.Tensor) -> CaseScores:
    scored = _scored(lm, record)
    scores = [PromptScore(*(r.mean_prob for r in s.forced)) for s in scored]
    n_para, n_nbr = len(record.paraphrase_prompts), len(record.neighborhood_prompts)
    kl = kl_divergence(pre, _next_token(record, scored)).tolist()
    sets = {"rewrite": [record.rewrite_prompt], "paraphrase": record.paraphrase_prompts,
            "neighborhood": record.neighborhood_prompts, "distracting": _distracting(record)}
    return CaseScores(
        rewrite=scores[0],
        paraphrase=tuple(scores[1 : 1 + n_para]),
        neighborhood=tuple(scores[1 + n_para : 1 + n_para + n_nbr]),
        distracting=tuple(scores[1 + n_para + n_nbr :]),
        neighborhood_kl=tuple(kl[:n_nbr]),
        distracting_kl=tuple(kl[n_nbr:]),
        diagnostics={name: tuple(values) for name, values in prompt_diagnostics(lm, sets).items()},
    )


def items(records: list[CounterFactRecord]) -> list[CounterFactRecord]:
    """What `score` takes, one at a time: every record."""
    return records


def score(lm: LoadedModel, record: CounterFactRecord, deltas: Mapping[str, Delta], pre: PreScores) -> CaseScores:
    """Edit, score and revert one case."""
    with applied(lm, deltas, [str(record.case_id)]):
        return _case_scores(lm, record, pre.tensors[str(record.case_id)])


def summarise(lm: LoadedModel, records: list[CounterFactRecord], cases: list[CaseScores], pre: PreScores) -> Evaluation:
    """The suite's metrics with the per-case rows."""
    vocab_size, ids = lm.model.config.vocab_size, [str(r.case_id) for r in records]
    return Evaluation(counterfact_metrics(cases, vocab_size=vocab_size), counterfact_records(cases, ids, vocab_size=vocab_size))


def evaluate(lm: LoadedModel, records: list[CounterFactRecord], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
    """Every case scored in turn (`score`), then summarised (`summarise`); the stages fan `score` out."""
    return summarise(lm, records, [score(lm, item, deltas, pre) for item in items(records)], pre)
