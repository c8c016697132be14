"""The locality suite end to end on tiny-gptj and the real mirrored files (size 2 per column, 4 PIQA items)."""

from __future__ import annotations

import json
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
    selection = locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG)
    records = selection.records
    assert [r.column for r in records] == ["OA", "OA", "DN", "DN"]
    oa, dn = records[0], records[2]
    assert oa.constructed and oa.probes and oa.request.prompt.count("{}") == 1
    # DN: CounterFact+ distracting prompts, continued with the neighbours' (true) object
    assert all(p.prompt.startswith(f"{dn.request.rewrite_prompt} {dn.request.target_new}. ") for p in dn.probes)
    assert all(p.answer == dn.request.target_true for p in dn.probes)
    # OT: the seeded PIQA subsample, the selection's shared part
    assert len(selection.piqa) == 4
    assert locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG).piqa == selection.piqa  # fixed by the seed
    path = tmp_path / "locality.json"
    common.save_records(path, "locality", selection, CONFIG.model_dump())
    assert common.load_records(path, locality.RECORD_TYPE) == selection


def test_every_stored_record_is_a_real_edit(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    """The records file holds OA/DN records only, each with a request and probes; PIQA is stored apart, once,
    under `shared` (no sentinel record carries it); a file without that section is refused by name."""
    path = tmp_path / "locality.json"
    common.save_records(path, "locality", locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG), CONFIG.model_dump())
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert set(payload["shared"]) == {"piqa"} and len(payload["shared"]["piqa"]) == 4
    for record in payload["records"]:
        assert record["column"] in ("OA", "DN") and record["request"] is not None and record["probes"]
        assert "piqa" not in record
    del payload["shared"]
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(ValueError, match="locality.json: no 'shared' section"):
        common.load_records(path, locality.RECORD_TYPE)


def test_suite_end_to_end(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    lm = tiny_gptj_lm
    selection = locality.select(lm, RAW_ROOT, CONFIG)
    cases = locality.edit_cases(selection)
    assert [c.case_id for c in cases] == [f"{r.column}/{r.case_id}" for r in selection.records]
    assert len({c.case_id for c in cases}) == len(cases) == 4
    assert all(c.base is None and c.requests == (r.request,) for c, r in zip(cases, selection.records, strict=True))

    pre = locality.pre_scores(lm, selection)
    common.save_pre(tmp_path / "pre", pre)
    pre = common.load_pre(tmp_path / "pre")
    assert set(pre.tensors) == {c.case_id for c in cases}
    # the unedited PIQA log-likelihoods match independent, unbatched forward passes
    piqa = selection.piqa
    hits = []
    for item, stored in zip(piqa, pre.values["piqa_logliks"], strict=True):
        context = f"Question: {item.goal}\nAnswer:"
        sums = [summed_logprob(lm, context, sol) for sol in item.solutions]
        assert stored == pytest.approx(sums, abs=1e-4)
        hits.append((0 if sums[0] >= sums[1] else 1) == item.label)

    deltas = _build_deltas(lm, cases, FT_HPARAMS)
    before = snapshot(lm.model)
    evaluation = locality.evaluate(lm, selection, deltas, pre)
    metrics = evaluation.metrics
    assert changed_tensors(lm.model, before) == set()  # every delta reverted
    assert {"OA", "DN", "OT", "OT_pre", "cases"} <= set(metrics) <= {"OA", "DN", "OT", "OT_pre", "OT_ratio", "cases"}
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("OA", "DN", "OT", "OT_pre"))
    assert metrics["OT_pre"] == pytest.approx(100 * sum(hits) / len(hits))
    assert metrics["cases"] == 4.0
    # every per-record row belongs to an edited record; OT has one row per edit, behind its interval
    assert {r["case"] for r in evaluation.records} == {c.case_id for c in cases}
    assert sorted(r["case"] for r in evaluation.records if r["metric"] == "OT") == sorted(c.case_id for c in cases)


def test_a_null_edit_keeps_every_argmax(tiny_gptj_lm: LoadedModel) -> None:
    """FT with no steps changes nothing: LocAgree is 100 and OT equals OT_pre."""
    records = locality.select(tiny_gptj_lm, RAW_ROOT, CONFIG.model_copy(update={"subset_size": 1}))
    pre = locality.pre_scores(tiny_gptj_lm, records)
    deltas = _build_deltas(tiny_gptj_lm, locality.edit_cases(records), FT_HPARAMS.model_copy(update={"num_steps": 0}))
    metrics = locality.evaluate(tiny_gptj_lm, records, deltas, pre).metrics
    assert metrics["OA"] == metrics["DN"] == 100.0
    assert metrics["OT"] == metrics["OT_pre"]
