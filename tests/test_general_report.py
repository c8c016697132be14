"""From stored Figure-4 outputs to tidy rows, flat metrics and the figure (files only, no model)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from kepitfalls.general.figure import draw, read_rows, read_survey
from kepitfalls.general.names import SCORERS, TASKS
from kepitfalls.general.scores import COLUMNS, flat_metrics, run_rows
from kepitfalls.params import PROJECT_ROOT
from kepitfalls.report.settings import Bootstrap

RESAMPLING = Bootstrap(resamples=2000, seed=0)
TASK_ROWS = {
    "nq": [{"id": "0", "refs": ["Paris"], "new": " Paris", "full": "Q: x Answer: Paris"}],
    "sst2": [{"id": "0", "refs": ["positive"], "new": " positive", "full": "text: x answer: positive"},
             {"id": "1", "refs": ["negative"], "new": " positive", "full": "text: y answer: positive"}],
    "gsm8k": [{"id": "0", "refs": ["5"], "new": " 5", "full": "Q: Therefore, the answer (arabic numerals) is: 5"}],
    "samsum": [{"id": "0", "refs": ["the cat sat"], "new": " the cat sat", "full": "TL;DR: the cat sat<|endoftext|>"}],
}


def point(nll: list[float], diagnostics: dict | None = None) -> dict:
    return {"tasks": TASK_ROWS, "wikitext_nll": nll, "diagnostics": diagnostics or {}}


UNEDITED = {"model": "m", "checkpoints": {"0": point([1.0, 2.0])}, "me_ppl": {"0": [10.0, 20.0, 90.0]}}
RUN = {"model": "m", "mode": "sequential", "checkpoints": {"2": point([2.0, 3.0], {"sst2": {"codebook_hit": [1.0, 0.0]}})}, "me_ppl": {"1": [11.0, 21.0, 91.0], "2": [12.0, 22.0, 92.0]}}


def test_rows_hold_every_task_scorer_and_point_with_the_unedited_start() -> None:
    rows = run_rows("FT", "sequential", UNEDITED, RUN, RESAMPLING)
    assert all(tuple(row) == COLUMNS for row in rows)
    assert {(r["task"], r["scorer"]) for r in rows if r["task"] in TASKS and r["scorer"] in SCORERS} == {(t, s) for t in TASKS for s in SCORERS}
    assert {r["edits"] for r in rows if r["task"] == "sst2"} == {0, 2}
    assert sorted({r["edits"] for r in rows if r["task"] == "me_ppl"}) == [0, 1, 2]
    sst2 = next(r for r in rows if (r["task"], r["scorer"], r["edits"]) == ("sst2", "clean", 0))
    assert (sst2["value"], sst2["n"]) == (0.5, 2) and 0 < sst2["ci_low"] < 0.5 < sst2["ci_high"] < 1
    ppl = {(r["edits"], r["metric"]): r["value"] for r in rows if r["task"] == "me_ppl"}
    assert ppl[(0, "mean")] == 40.0 and ppl[(0, "median")] == 20.0 and ppl[(2, "median")] == 22.0
    hits = [r for r in rows if r["scorer"] == "diagnostic"]
    assert [(r["edits"], r["task"], r["metric"], r["value"], r["n"]) for r in hits] == [(2, "sst2", "codebook_hit", 0.5, 2)]
    wiki = next(r for r in rows if r["task"] == "wikitext2" and r["edits"] == 2)
    assert wiki["value"] == pytest.approx(math.exp(2.5), rel=1e-5)


def test_every_point_after_the_unedited_one_carries_its_paired_change() -> None:
    rows = run_rows("FT", "sequential", UNEDITED, RUN, RESAMPLING)
    assert all(r["change"] is None for r in rows if r["edits"] == 0 or r["scorer"] == "diagnostic")
    # every ME-PPL sentence is 1, 2 then 2 higher: a paired interval is the point itself, where the two
    # unpaired intervals overlap almost entirely
    mean = {r["edits"]: r for r in rows if (r["task"], r["metric"]) == ("me_ppl", "mean")}
    assert (mean[1]["change"], mean[1]["change_low"], mean[1]["change_high"]) == (1.0, 1.0, 1.0)
    assert (mean[2]["change"], mean[2]["change_low"], mean[2]["change_high"]) == (2.0, 2.0, 2.0)
    assert mean[2]["ci_low"] < mean[0]["value"]
    wiki = next(r for r in rows if r["task"] == "wikitext2" and r["edits"] == 2)
    assert wiki["change"] == pytest.approx(math.exp(2.5) - math.exp(1.5), rel=1e-5)
    sst2 = next(r for r in rows if (r["task"], r["scorer"], r["edits"]) == ("sst2", "gu", 2))
    assert (sst2["change"], sst2["change_low"], sst2["change_high"]) == (0.0, 0.0, 0.0)  # the same generations


def test_a_point_scored_on_other_examples_has_no_paired_change() -> None:
    other = point([2.0, 3.0])
    other["tasks"] = {**TASK_ROWS, "sst2": [{**TASK_ROWS["sst2"][0], "id": "7"}, TASK_ROWS["sst2"][1]]}
    with pytest.raises(ValueError, match="sst2: the examples differ"):
        run_rows("FT", "sequential", UNEDITED, {**RUN, "checkpoints": {"2": other}}, RESAMPLING)


def test_flat_metrics_name_mode_edits_task_scorer_metric_and_count() -> None:
    metrics = flat_metrics(run_rows("FT", "sequential", UNEDITED, RUN, RESAMPLING))
    assert metrics["sequential_002_sst2_gu_accuracy"] == 0.5
    assert metrics["sequential_002_sst2_gu_accuracy_n"] == 2.0
    assert metrics["sequential_001_me_ppl_yang_mean"] == pytest.approx(41.0)


def test_a_run_of_another_model_is_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        run_rows("FT", "sequential", UNEDITED, {**RUN, "model": "other"}, RESAMPLING)


def test_the_figure_is_drawn_with_the_survey_curves_and_its_svg_is_reproducible(tmp_path: Path) -> None:
    rows = run_rows("ROME", "sequential", UNEDITED, RUN, RESAMPLING)
    table = tmp_path / "ROME.csv"
    with open(table, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    survey = read_survey(PROJECT_ROOT / "reference" / "survey_figure4.csv")
    assert survey[("gsm8k", "ROME")][:2] == [(0, 0.75), (10, 0.31)]
    for name in ("a", "b"):
        draw(read_rows(table), survey, "tiny", tmp_path / f"{name}.png", tmp_path / f"{name}.svg")
    assert (tmp_path / "a.png").stat().st_size > 10_000
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert read_rows(table) == rows  # the CSV reads back as it was written, numbers as numbers
    assert b"ROME (survey)" in (tmp_path / "a.svg").read_bytes()


def test_figure4_findings_verdicts() -> None:
    from kepitfalls.general.findings import Finding, to_markdown, verdict

    degrades = Finding(id="D", claim="X degrades", method="X", expect="degrades", edits=10)
    stable = Finding(id="S", claim="X is stable", method="X", expect="stable", edits=40)
    # paired changes from an unedited 0.6 on 50 examples
    fell = {"value": 0.1, "ci_low": 0.0, "ci_high": 0.3, "change": -0.5, "change_low": -0.7, "change_high": -0.3, "n": 50}
    same = {"value": 0.6, "ci_low": 0.45, "ci_high": 0.75, "change": 0.0, "change_low": 0.0, "change_high": 0.0, "n": 50}
    # one example of ten lost at a ceiling: its own interval excludes the unedited 1.0, the paired change does not
    one_lost = {"value": 0.9, "ci_low": 0.555, "ci_high": 0.997, "change": -0.1, "change_low": -0.3, "change_high": 0.0, "n": 10}
    assert verdict(degrades, 0.6, fell, 10) == "supported" and verdict(stable, 0.6, fell, 10) == "contradicted"
    assert verdict(stable, 0.6, same, 10) == "supported" and verdict(degrades, 0.6, same, 10) == "contradicted"
    assert verdict(stable, 1.0, one_lost, 10) == "supported" and verdict(degrades, 1.0, one_lost, 10) == "undecided"
    assert verdict(degrades, 0.6, {**fell, "n": 4}, 10).startswith("undecided at n = 4")
    floor = {**same, "value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert verdict(degrades, 0.0, floor, 10).startswith("uninformative") and verdict(stable, 0.0, floor, 10).startswith("uninformative")
    rows = run_rows("ROME", "sequential", UNEDITED, RUN, RESAMPLING)
    text = to_markdown([Finding(id="R", claim="ROME degrades", method="ROME", expect="degrades", edits=10), degrades], rows, "m", 10)
    assert "| R | ROME degrades | sst2 | 10 | 2 | 0.500 | 0.500 [0.013, 0.987] | +0.000 [+0.000, +0.000] | 2 |" in text
    assert "not run (X has no chain here)" in text
