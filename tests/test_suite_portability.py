"""The portability suite end to end on tiny-gptj and the real mirrored portability files (size 2 per column)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mirror import MIRROR
from fixtures_models import build_deltas, changed_tensors, single_thread, snapshot, tiny_gptj_lm  # noqa: F401

from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.primitives import greedy_generate, teacher_forced
from kepitfalls.suites import common, portability
from kepitfalls.tokens import target_ids

RAW_ROOT = MIRROR
CONFIG = portability.Config(benchmark="easyedit_portability", subset_size=2, seed=0, known_only=False,
                            datasets=portability.Datasets(SR="zsre", RR="zsre", OH="zsre"))
FT_HPARAMS = FTHparams(layers=[1], num_steps=2, lr=1e-3, weight_decay=0.0, objective="target_new", norm_constraint=None)


@pytest.fixture(autouse=True)
def mirror() -> None:
    if not (RAW_ROOT / "easyedit_portability").is_dir():
        pytest.skip(f"no benchmark mirror at {RAW_ROOT}")


def _build_deltas(lm: LoadedModel, cases: list[common.EditCase], hparams: FTHparams) -> dict:
    return build_deltas(lm, cases, FineTune(hparams))


def test_select_reads_each_column_from_its_file(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    records = portability.select(tiny_gptj_lm, RAW_ROOT, CONFIG)
    assert [r.column for r in records] == ["SR", "SR", "RR", "RR", "OH", "OH"]
    assert {(r.column, r.record.dataset, r.record.kind) for r in records} == {
        ("SR", "zsre", "subject_replace"), ("RR", "zsre", "inverse_relation"), ("OH", "zsre", "one_hop"),
    }
    for r in records:
        assert r.record.request.prompt.count("{}") == 1
        if r.column == "SR":  # the alternative subject asks for the new target
            assert all(p.answer == r.record.request.target_new for p in r.record.probes)
        if r.column == "RR":  # the inverse question asks for the original subject
            assert all(p.answer == r.record.request.subject for p in r.record.probes)
    # subsets nest and are per column
    larger = portability.select(tiny_gptj_lm, RAW_ROOT, CONFIG.model_copy(update={"subset_size": 3}))
    assert {r.case_id for r in records} <= {r.case_id for r in larger}
    # CounterFact for SR and OH when asked
    cf = portability.select(tiny_gptj_lm, RAW_ROOT, CONFIG.model_copy(update={"subset_size": 1, "datasets": portability.Datasets(SR="counterfact", RR="zsre", OH="counterfact")}))
    assert [(r.column, r.record.dataset) for r in cf] == [("SR", "counterfact"), ("RR", "zsre"), ("OH", "counterfact")]
    # the records round-trip through the suite's JSON file
    common.save_records(tmp_path / "portability.json", "portability", records, CONFIG.model_dump())
    assert common.load_records(tmp_path / "portability.json", portability.RECORD_TYPE) == records


def test_suite_end_to_end(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    lm = tiny_gptj_lm
    records = portability.select(lm, RAW_ROOT, CONFIG)
    cases = portability.edit_cases(records)
    assert [c.case_id for c in cases] == [r.case_id for r in records]
    assert len({c.case_id for c in cases}) == len(cases) == 6
    assert all(c.base is None and c.requests == (r.record.request,) for c, r in zip(cases, records))

    pre = portability.pre_scores(lm, records)
    common.save_pre(tmp_path / "pre", pre)
    pre = common.load_pre(tmp_path / "pre")

    # the unedited scores are TokAcc and greedy exact match of each probe, computed directly here
    first = records[0].record.probes[0]
    direct = teacher_forced(lm.model, lm.tokenizer, [first.prompt], [first.answer])[0].token_accuracy
    assert pre.values[records[0].case_id]["token_accuracy"] == [direct]
    text = greedy_generate(lm.model, lm.tokenizer, [first.prompt], len(target_ids(lm.tokenizer, first.answer)))[0]
    assert pre.values[records[0].case_id]["generated"] == [text]

    deltas = _build_deltas(lm, cases, FT_HPARAMS)
    before = snapshot(lm.model)
    metrics = portability.evaluate(lm, records, deltas, pre).metrics
    assert changed_tensors(lm.model, before) == set()  # every delta reverted
    keys = [f"{c}{s}" for s in ("", "_pre") for c in ("SR", "SR_em", "RR", "RR_em", "OH", "OH_em")]
    assert set(metrics) == set(keys) | {"cases"}
    assert metrics["cases"] == 6.0
    assert all(0.0 <= metrics[k] <= 100.0 for k in keys)


def test_a_null_edit_scores_as_the_unedited_model(tiny_gptj_lm: LoadedModel) -> None:
    """FT with no steps changes nothing: every post-edit score equals its *_pre."""
    records = portability.select(tiny_gptj_lm, RAW_ROOT, CONFIG.model_copy(update={"subset_size": 1}))
    pre = portability.pre_scores(tiny_gptj_lm, records)
    deltas = _build_deltas(tiny_gptj_lm, portability.edit_cases(records), FT_HPARAMS.model_copy(update={"num_steps": 0}))
    metrics = portability.evaluate(tiny_gptj_lm, records, deltas, pre).metrics
    for key in ("SR", "SR_em", "RR", "RR_em", "OH", "OH_em"):
        assert metrics[key] == metrics[f"{key}_pre"]
