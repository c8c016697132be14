"""The Figure-4 scorers against hand-computed values, Gu et al.'s quirks included."""

from __future__ import annotations

import pytest

from kepitfalls.general.generated import Generation
from kepitfalls.general.scorers import gsm8k, nq, samsum, sst2
from kepitfalls.general.tasks import Example
from kepitfalls.general.tasks.gsm8k import MARKER


def ex(*refs: str) -> Example:
    return Example("0", "", refs)


def gen(new: str, prompt: str = "") -> Generation:
    return Generation(new, prompt + new)


def test_squad_normalisation() -> None:
    assert nq.normalize("The  Eiffel-Tower, a tower!") == "eiffeltower tower"


def test_gu_nq_takes_everything_after_the_last_answer_marker_and_hits_on_the_first_or_last_word() -> None:
    prompt = "Answer the following question. Question: who wrote it Answer:"
    items = [ex("Johnson"), ex("Johnson"), ex("Johnson")]
    generations = [gen(" Johnson wrote it", prompt), gen(" it was Johnson", prompt), gen(" it was Johnson himself", prompt)]
    assert nq.gu_counts(items, generations)["exact_match"] == [1.0, 1.0, 1.0]


def test_gu_nq_counts_every_one_word_hit_and_a_never_reset_flag_cuts_later_examples_short() -> None:
    items = [ex("b"), ex("x y"), ex("b")]
    generations = [
        gen("Answer: p b c b d"),  # words[1] and words[3] hit alone: counted twice
        gen("Answer: p x y d"),  # a two-word span hits: counted once, and the global flag is set
        gen("Answer: p b c d"),  # with the flag set only spans from words[0] are tried: "b" is missed
    ]
    assert nq.gu_counts(items, generations)["exact_match"] == [2.0, 1.0, 0.0]
    assert nq.gu_counts(items[2:], generations[2:])["exact_match"] == [1.0]  # without the flag it counts


def test_clean_nq_reads_the_first_line_of_the_new_tokens() -> None:
    values = nq.clean_scores([ex("Andrew Johnson"), ex("Johnson"), ex("Paris")],
                             [gen(" Andrew Johnson.\nQ: next"), gen(" President Johnson"), gen(" Lyon")])
    assert values == {"exact_match": [1.0, 0.0, 0.0], "contains": [1.0, 1.0, 0.0]}


def test_gu_sst2_tests_positive_first_and_counts_unparsable_as_wrong() -> None:
    items = [ex("negative"), ex("positive"), ex("negative"), ex("negative")]
    generations = [gen(" positive negative", "text: x answer:"), gen(" Positive", "text: x answer:"),
                   gen(" neutral", "text: x answer:"), gen(" negative", "text: x answer:")]
    assert sst2.gu_scores(items, generations)["accuracy"] == [0.0, 1.0, 0.0, 1.0]


def test_clean_sst2_needs_the_label_as_first_word() -> None:
    values = sst2.clean_scores([ex("positive"), ex("positive"), ex("negative")], [gen(" Positive."), gen(" very positive"), gen("")])
    assert values["accuracy"] == [1.0, 0.0, 0.0]


def test_gu_gsm8k_is_a_substring_test_after_the_marker() -> None:
    prompt = "Q: q A:Let's think step by step. 5 apples. " + MARKER
    values = gsm8k.gu_scores([ex("5"), ex("5"), ex("7")], [gen(" 15", prompt), gen(" 5.", prompt), gen(" 8", prompt)])
    assert values["solve_rate"] == [1.0, 1.0, 0.0]  # "5" is found in "15"; the 5 of the rationale is not read


def test_clean_gsm8k_compares_the_first_number() -> None:
    values = gsm8k.clean_scores([ex("5"), ex("1200"), ex("7")], [gen(" 15"), gen(" 1,200 sheets"), gen(" none")])
    assert values["solve_rate"] == [0.0, 1.0, 0.0]


def test_gu_samsum_chops_thirteen_characters_and_scores_a_short_prediction_zero() -> None:
    eot = "<|endoftext|>"
    full = "A: hi\nB: hello\nTL;DR: the cat sat on the mat" + eot
    values = samsum.gu_rouge(full, "the cat sat on the mat")
    assert values["rouge1_f1"] == pytest.approx(1.0)
    assert values["rouge_mean_f1"] == pytest.approx(1.0)
    # without a trailing end-of-text the chop eats words: " the cat sat on the mat"[:-13] is " the cat s"; pltrdy
    # counts distinct n-grams: unigrams {the, cat, s} against {the, cat, sat, on, mat}: p = 2/3, r = 2/5, F = 1/2;
    # bigrams {the cat, cat s} against five: p = 1/2, r = 1/5, F = 2/7
    chopped = samsum.gu_rouge("TL;DR: the cat sat on the mat", "the cat sat on the mat")
    assert chopped["rouge1_f1"] == pytest.approx(0.5, rel=1e-6)
    assert chopped["rouge2_f1"] == pytest.approx(2 / 7, rel=1e-6)
    assert chopped["rouge_mean_f1"] == pytest.approx((0.5 + 2 / 7 + chopped["rougeL_f1"]) / 3)
    assert samsum.gu_rouge("TL;DR: ab" + eot[:-1], "the cat")["rouge_mean_f1"] == 0.0  # one character left


def test_clean_samsum_is_rouge_score_on_the_new_tokens() -> None:
    values = samsum.clean_rouge(" the cat sat\n", "the cat sat on the mat", samsum.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True))
    p1, r1 = 1.0, 3 / 6
    p2, r2 = 1.0, 2 / 5
    assert values["rouge1_f1"] == pytest.approx(2 * p1 * r1 / (p1 + r1))
    assert values["rouge2_f1"] == pytest.approx(2 * p2 * r2 / (p2 + r2))
    assert values["rougeL_f1"] == pytest.approx(2 * p1 * r1 / (p1 + r1))
    assert values["rouge_mean_f1"] == pytest.approx((values["rouge1_f1"] + values["rouge2_f1"] + values["rougeL_f1"]) / 3)
