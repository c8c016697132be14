"""The locality suite end to end on tiny-gptj and the real mirrored files (size 2 per column, 4 PIQA items)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mirror import MIRROR
import torch
from fixtures_models import build_deltas, changed_tensors, single_thread, snapshot, tiny_gptj_lm  # noqa: F401

from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.suites import common, locality

RAW_ROOT = MIRROR
CONFIG = locality.Config(
    benchmark="zsre", subset_size=2, seed=0, piqa_size=4, known_only=False,
    files=locality.Files(OA="zsre/knowedit_derived/ZsRE-test-all.json",
                         DN="easyedit_portability/portability/One Hop/counterfact_portability_gpt4.json", OT="piqa"),
)
FT_HPARAMS = FTHparams(layers=[1], num_steps=2, lr=1e-3, weight_decay=0.0, objective="target_new", norm_constraint=None)


@pytest.fixture(autouse=True)
def mirror() -> None:
    if not (RAW_ROOT / "piqa").is_dir():
        pytest.skip(f"no benchmark mirror at {RAW_ROOT}")


@torch.inference_mode()
def summed_logprob(lm: LoadedModel, prompt: str, continuation: str) -> float:
    """Σ log p(" " + continuation | prompt) from one plain forward pass, independent of the suite's batching."""
    prefix = lm.tokenizer(prompt)["input_ids"]
    answer = lm.tokenizer(" " + continuation, add_special_tokens=False)["input_ids"]
    logits = lm.model(input_ids=torch.tensor([prefix + answer])).logits[0].float().log_softmax(-1)
    return float(sum(logits[len(prefix) - 1 + j, token] for j, token in enumerate(answer)))


def _build_deltas(lm: LoadedModel, cases: list[common.EditCase], hparams: FTHparams) -> dict:
    return build_deltas(lm, cases, FineTune(hparams))


def test_select_builds_each_column(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    records = locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG)
    assert [r.column for r in records] == ["OA", "OA", "DN", "DN", "OT"]
    oa, dn, ot = records[0], records[2], records[-1]
    assert oa.constructed and oa.probes and oa.request.prompt.count("{}") == 1
    # DN: CounterFact+ distracting prompts, continued with the neighbours' (true) object
    assert all(p.prompt.startswith(f"{dn.request.rewrite_prompt} {dn.request.target_new}. ") for p in dn.probes)
    assert all(p.answer == dn.request.target_true for p in dn.probes)
    # OT: the seeded PIQA subsample, no edit
    assert ot.request is None and len(ot.piqa) == 4 and not ot.probes
    assert locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG)[-1] == ot  # fixed by the seed
    common.save_records(tmp_path / "locality.json", "locality", records, CONFIG.model_dump())
    assert common.load_records(tmp_path / "locality.json", locality.RECORD_TYPE) == records


def test_suite_end_to_end(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    lm = tiny_gptj_lm
    records = locality.select(lm, RAW_ROOT, CONFIG)
    cases = locality.edit_cases(records)
    assert [c.case_id for c in cases] == [f"{r.column}/{r.case_id}" for r in records[:-1]]  # no case for OT
    assert len({c.case_id for c in cases}) == len(cases) == 4
    assert all(c.base is None and c.requests == (r.request,) for c, r in zip(cases, records))

    pre = locality.pre_scores(lm, records)
    common.save_pre(tmp_path / "pre", pre)
    pre = common.load_pre(tmp_path / "pre")
    assert set(pre.tensors) == {c.case_id for c in cases}
    # the unedited PIQA log-likelihoods match independent, unbatched forward passes
    piqa = records[-1].piqa
    hits = []
    for item, stored in zip(piqa, pre.values["piqa_logliks"], strict=True):
        context = f"Question: {item.goal}\nAnswer:"
        sums = [summed_logprob(lm, context, sol) for sol in item.solutions]
        assert stored == pytest.approx(sums, abs=1e-4)
        hits.append((0 if sums[0] >= sums[1] else 1) == item.label)

    deltas = _build_deltas(lm, cases, FT_HPARAMS)
    before = snapshot(lm.model)
    metrics = locality.evaluate(lm, records, deltas, pre).metrics
    assert changed_tensors(lm.model, before) == set()  # every delta reverted
    assert {"OA", "DN", "OT", "OT_pre", "cases"} <= set(metrics) <= {"OA", "DN", "OT", "OT_pre", "OT_ratio", "cases"}
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("OA", "DN", "OT", "OT_pre"))
    assert metrics["OT_pre"] == pytest.approx(100 * sum(hits) / len(hits))
    assert metrics["cases"] == 4.0


def test_a_null_edit_keeps_every_argmax(tiny_gptj_lm: LoadedModel) -> None:
    """FT with no steps changes nothing: LocAgree is 100 and OT equals OT_pre."""
    records = locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG.model_copy(update={"subset_size": 1}))
    pre = locality.pre_scores(tiny_gptj_lm, records)
    deltas = _build_deltas(tiny_gptj_lm, locality.edit_cases(records), FT_HPARAMS.model_copy(update={"num_steps": 0}))
    metrics = locality.evaluate(tiny_gptj_lm, records, deltas, pre).metrics
    assert metrics["OA"] == metrics["DN"] == 100.0
    assert metrics["OT"] == metrics["OT_pre"]
