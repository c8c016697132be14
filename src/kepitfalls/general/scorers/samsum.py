"""SAMSum scorers: ROUGE F1 (1, 2, L and their mean, the survey's number).

Gu et al. score with PyPI `rouge` (pltrdy); the clean scorer with Google's `rouge-score`, the de-facto
standard (Porter stemming). The two disagree on ROUGE-L and on tokenisation (pltrdy counts distinct
n-grams), so their numbers differ.
"""

from __future__ import annotations

from typing import Sequence

from rouge import Rouge
from rouge_score.rouge_scorer import RougeScorer

from kepitfalls.general import names
from kepitfalls.general.generated import Generation
from kepitfalls.general.scorers import Scorer
from kepitfalls.general.tasks import Example

MAIN = names.MAIN["samsum"]
METRICS = (MAIN, "rouge1_f1", "rouge2_f1", "rougeL_f1")
#: Gu et al. cut the last 13 characters of every prediction (meant for a trailing "<|endoftext|>").
GU_CHOP = 13


def _row(f1: Sequence[float]) -> dict[str, float]:
    return dict(zip(METRICS, [sum(f1) / 3, *f1]))


def _collect(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {name: [row[name] for row in rows] for name in METRICS}


def gu_rouge(prediction: str, reference: str) -> dict[str, float]:
    """pltrdy `rouge` F1 of the text after the last "DR:" less its last 13 characters; 0 when at most one
    character is left (Gu et al.'s guard), and 0 where `rouge` refuses the hypothesis (it raises on text
    with no word left after its own cleaning; Gu et al.'s script would stop there)."""
    predict = prediction.split("DR:")[-1][:-GU_CHOP]
    if len(predict) <= 1:
        return _row([0.0, 0.0, 0.0])
    try:
        score = Rouge().get_scores(predict, reference)[0]
    except ValueError:
        return _row([0.0, 0.0, 0.0])
    return _row([score["rouge-1"]["f"], score["rouge-2"]["f"], score["rouge-l"]["f"]])


def clean_rouge(prediction: str, reference: str, scorer: RougeScorer) -> dict[str, float]:
    scores = scorer.score(reference, prediction.strip())
    return _row([scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure])


def gu_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    return _collect([gu_rouge(g.full, item.refs[0]) for item, g in zip(items, generations, strict=True)])


def clean_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """rouge-score F1 (stemmed) of the new tokens, stripped."""
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    return _collect([clean_rouge(g.new, item.refs[0], scorer) for item, g in zip(items, generations, strict=True)])


SCORERS = {"gu": Scorer(METRICS, False, gu_scores), "clean": Scorer(METRICS, False, clean_scores)}
