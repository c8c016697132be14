"""MQuAKE edit-wise, instance-wise and multi-hop accuracy (Zhong et al. 2023; METRICS.md §2.2).

princeton-nlp/MQuAKE has no evaluation code for parameter-editing methods; its only matching code is
`run_mello.ipynb` (`ans == d["new_answer"] or ans in d["new_answer_alias"]` on the stripped answer line).
The definitions follow the paper:

    EW = mean over every edited fact (s, r, o*) of 1[f*(cloze(s, r)) = o*]
    IW = mean over instances of 1[every fact of the new chain is recalled]
    MH = mean over instances of 1[∃ q ∈ questions: f*(q) ∈ {new_answer} ∪ new_answer_alias]

all ×100. Matching (unverified in the reference, chosen here): both sides are SQuAD-normalised
(lower-case, punctuation removed, articles a/an/the dropped, whitespace collapsed), and the prediction is
the first line of the greedy continuation. Few-shot answers (MH, and the unedited hops of IW) end at the
newline the demonstrations teach, so they are compared by exact match; a bare cloze has no such stop and
continues past the object ("Madonna, who ..."), so cloze answers (EW, and the edited hops of IW) are
compared by word-boundary prefix match, the reading of f*(cloze) = o* for a free continuation. Every
metric is also reported with looser matching (`*_prefix`, `*_contains`) since the reference's own
matching is unknown. CoT answers are the text after the last "Answer:" of the generated block (the
block ends at the first blank line, where the demonstrations put the next question).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from statistics import mean
from typing import Any, Callable, Sequence

from kepitfalls.metrics.records import POOLED, YES, binary, row

MATCH_MODES = ("exact", "prefix", "contains")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_BLOCK_END = re.compile(r"\n[ \t]*\n")
_COT_ANSWER = "Answer:"


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def first_line(generation: str) -> str:
    """The answer of a plain prompt: the continuation up to its first newline (leading blanks skipped)."""
    return generation.lstrip(" \t").split("\n", 1)[0].strip()


def parse_cot_answer(generation: str) -> str | None:
    """The text after the last "Answer:" of the first generated block, up to its newline; None if absent.

    The generated block is cut at the first blank line: the demonstrations separate examples by one, so
    whatever follows is the model inventing the next question, not its answer to this one.
    """
    block = _BLOCK_END.split(generation, maxsplit=1)[0]
    at = block.rfind(_COT_ANSWER)
    if at < 0:
        return None
    return block[at + len(_COT_ANSWER) :].split("\n", 1)[0].strip()


def matches(prediction: str | None, answers: Sequence[str], mode: str = "exact") -> bool:
    """Whether a predicted answer matches any accepted answer after normalising both.

    exact: equal; prefix: the prediction starts with the answer at a word boundary; contains: the answer
    occurs in the prediction as whole words. Answers that normalise to nothing never match.
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"match mode must be one of {MATCH_MODES}, got {mode!r}")
    if prediction is None:
        return False
    pred = normalize_answer(prediction)
    for answer in answers:
        gold = normalize_answer(answer)
        if not gold:
            continue
        if mode == "exact" and pred == gold:
            return True
        if mode == "prefix" and (pred == gold or pred.startswith(gold + " ")):
            return True
        if mode == "contains" and f" {gold} " in f" {pred} ":
            return True
    return False


@dataclass(frozen=True)
class Attempt:
    """One greedy continuation and the answers that count as right for it."""

    generation: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Hop:
    """One fact of the new chain: recalled through the edit's cloze (`edited`) or a few-shot question."""

    attempt: Attempt
    edited: bool


@dataclass(frozen=True)
class InstanceScores:
    """Every generation of one MQuAKE instance on its edited model."""

    edits: tuple[Attempt, ...]  # the cloze of each requested edit, against target_new (+ its hop's aliases)
    hops: tuple[Hop, ...]  # each fact of the new chain, against the hop's answer + aliases
    questions: tuple[Attempt, ...]  # the multi-hop questions, plain few-shot prompt
    cot: tuple[Attempt, ...]  # the same questions, chain-of-thought prompt


def _recalled(attempt: Attempt, mode: str, parse: Callable[[str], str | None] = first_line) -> bool:
    return matches(parse(attempt.generation), attempt.answers, mode)


def edit_wise(instances: Sequence[InstanceScores], mode: str = "prefix") -> float:
    """EW ×100: the share of all edited facts (pooled over instances) whose cloze answer is the new object."""
    return 100 * mean(float(_recalled(a, mode)) for inst in instances for a in inst.edits)


def hop_recalled(hop: Hop, mode: str | None = None) -> bool:
    """One chain fact: cloze prefix match for edited facts, few-shot exact match for the others (by default)."""
    return _recalled(hop.attempt, mode or ("prefix" if hop.edited else "exact"))


def instance_wise(instances: Sequence[InstanceScores], mode: str | None = None) -> float:
    """IW ×100: the share of instances whose every new-chain fact is recalled."""
    return 100 * mean(float(all(hop_recalled(h, mode) for h in inst.hops)) for inst in instances)


def _answered(attempts: Sequence[Attempt], mode: str, cot: bool) -> bool:
    parse = parse_cot_answer if cot else first_line
    return any(_recalled(a, mode, parse) for a in attempts)


def multi_hop(question_sets: Sequence[Sequence[Attempt]], mode: str = "exact", cot: bool = False) -> float:
    """MH ×100: the share of instances where ANY of the questions is answered right (first line, or CoT answer)."""
    return 100 * mean(float(_answered(attempts, mode, cot)) for attempts in question_sets)


def mquake_metrics(instances: Sequence[InstanceScores]) -> dict[str, float]:
    """EW, IW, MH and MH_cot ×100 with their looser-matching variants, and the counts they average over."""
    if not instances:
        raise ValueError("no MQuAKE instances to summarise")
    metrics = {
        "EW": edit_wise(instances, "prefix"),
        "EW_contains": edit_wise(instances, "contains"),
        "IW": instance_wise(instances),
        "IW_contains": instance_wise(instances, "contains"),
        "MH": multi_hop([i.questions for i in instances], "exact"),
        "MH_prefix": multi_hop([i.questions for i in instances], "prefix"),
        "MH_contains": multi_hop([i.questions for i in instances], "contains"),
        "MH_cot": multi_hop([i.cot for i in instances], "exact", cot=True),
        "MH_cot_contains": multi_hop([i.cot for i in instances], "contains", cot=True),
    }
    metrics["cases"] = float(len(instances))
    metrics["edits"] = float(sum(len(i.edits) for i in instances))
    return metrics


def question_records(question_sets: Sequence[Sequence[Attempt]], ids: Sequence[str], metric: str, mode: str, cot: bool = False) -> list[dict[str, Any]]:
    """One binary row per instance behind `multi_hop(question_sets, mode, cot)`, named `metric`."""
    return [binary(case_id, metric, _answered(attempts, mode, cot)) for case_id, attempts in zip(ids, question_sets, strict=True)]


def mquake_records(instances: Sequence[InstanceScores], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The per-instance rows behind `mquake_metrics`: EW pools each instance's edits, the rest are yes/no."""
    rows = []
    for case_id, inst in zip(ids, instances, strict=True):
        for name, mode in (("EW", "prefix"), ("EW_contains", "contains")):
            edits = [YES * _recalled(a, mode) for a in inst.edits]
            rows.append(row(case_id, name, POOLED, mean(edits), edits))
        rows.append(binary(case_id, "IW", all(hop_recalled(h) for h in inst.hops)))
        rows.append(binary(case_id, "IW_contains", all(hop_recalled(h, "contains") for h in inst.hops)))
    for name, mode, cot in (("MH", "exact", False), ("MH_prefix", "prefix", False), ("MH_contains", "contains", False),
                            ("MH_cot", "exact", True), ("MH_cot_contains", "contains", True)):
        rows.extend(question_records([i.cot if cot else i.questions for i in instances], ids, name, mode, cot))
    return rows
