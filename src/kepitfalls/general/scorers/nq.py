"""NQ-open scorers: Gu et al.'s exact-match count with its quirks, and exact match on the new tokens."""

from __future__ import annotations

import re
import string
from typing import Sequence

from kepitfalls.general import names
from kepitfalls.general.generated import Generation
from kepitfalls.general.scorers import Scorer
from kepitfalls.general.tasks import Example

MAIN = names.MAIN["nq"]


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _matches(prediction: str, answers: Sequence[str]) -> bool:
    return any(normalize(prediction) == normalize(answer) for answer in answers)


def gu_counts(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """Gu et al.'s count per example, in order: the text after the last "Answer:" of the whole decoded
    sequence, normalised, split on spaces; 1 if its first or last word is an answer; else every span
    words[i..j] is tried, a one-word hit counting and moving on to the next i (so an example can count more
    than once), a longer hit counting and setting a flag that is never reset, after which every later
    example stops after its first start word."""
    flag = False
    counts = []
    for item, generation in zip(items, generations, strict=True):
        words = normalize(generation.full.split("Answer:")[-1].replace("\n", " ")).split(" ")
        if _matches(words[0], item.refs) or _matches(words[-1], item.refs):
            counts.append(1.0)
            continue
        count = 0
        for i in range(len(words) - 1):
            span = words[i]
            if _matches(span, item.refs):
                count += 1
                continue
            for j in range(i + 1, len(words)):
                span = span + " " + words[j]
                if _matches(span, item.refs):
                    count += 1
                    flag = True
                    break
            if flag:
                break
        counts.append(float(count))
    return {MAIN: counts}


def clean_scores(items: Sequence[Example], generations: Sequence[Generation]) -> dict[str, list[float]]:
    """The new tokens up to the first line break: exact match, and whether an answer occurs in it as a
    whole-word span (both after normalisation)."""
    exact, contains = [], []
    for item, generation in zip(items, generations, strict=True):
        answer = normalize(generation.new.strip().split("\n")[0])
        golds = [normalize(a) for a in item.refs]
        exact.append(float(answer in golds))
        contains.append(float(any(g and f" {g} " in f" {answer} " for g in golds)))
    return {MAIN: exact, "contains": contains}


SCORERS = {
    "gu": Scorer((MAIN,), False, gu_counts),
    "clean": Scorer((MAIN, "contains"), True, clean_scores),
}
