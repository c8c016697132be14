"""The Figure-4 chain on a tiny model: checkpoint n carries exactly the first n edits, and growing the chain
reuses every stored delta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fixtures_encoder import encoder_dir  # noqa: F401
from fixtures_models import single_thread, snapshot, tiny_gptj_lm  # noqa: F401
from kepitfalls.atomic import write_json
from kepitfalls.deltas.codecs import NoRouterError
from kepitfalls.encoder import SentenceEncoder
from kepitfalls.general.generation import greedy
from kepitfalls.methods.SERAC import CLASSIFIER_FILE, SERAC, SERACHparams
from kepitfalls.methods.base import Artifacts
from kepitfalls.scoring.router import installed
from kepitfalls.requests import EditRequest
from kepitfalls.deltas import DeltaStore
from kepitfalls.editing import INDEX, load_deltas, store_deltas
from kepitfalls.general.chain import batch_cases, checkpoint_cases, sequential_cases
from kepitfalls.general.config import General
from kepitfalls.general.names import TASKS
from kepitfalls.general.perplexity import sentence_perplexities
from kepitfalls.general.run import Probes, chain_run, unedited_run
from kepitfalls.general.tasks import Example
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.params import PROJECT_ROOT
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.diagnostics import install, uninstall
from kepitfalls.suites.common import applied
from test_workers import tiny_worker

REQUESTS = [EditRequest("The capital of {} is", f"Land{i}", f" City{i}", " Paris") for i in range(4)]


def method() -> FineTune:
    return FineTune(FTHparams(layers=[1], num_steps=3, lr=5e-2, weight_decay=0.0, objective="target_new", norm_constraint=None))


def chain_deltas(lm: LoadedModel, requests: list[EditRequest], out: Path) -> dict:
    return store_deltas(lm, "FT", method(), sequential_cases(requests), out, {"suite": "chain"})


def test_checkpoint_n_applies_exactly_the_first_n_edits(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    chain_deltas(tiny_gptj_lm, REQUESTS, tmp_path)
    stored = load_deltas(tmp_path)
    original = snapshot(tiny_gptj_lm.model)
    by_hand, deltas = [], []  # each edit computed on the model carrying the ones before, applied as it goes
    for request in REQUESTS:
        deltas.append(method().edit(tiny_gptj_lm, [request]))
        deltas[-1].apply(tiny_gptj_lm.model)
        by_hand.append(snapshot(tiny_gptj_lm.model))
    for delta in reversed(deltas):
        delta.revert(tiny_gptj_lm.model)
    assert all(torch.equal(t, original[k]) for k, t in snapshot(tiny_gptj_lm.model).items())
    for n in range(1, len(REQUESTS) + 1):
        with applied(tiny_gptj_lm, stored, checkpoint_cases("sequential", n)):
            weights = snapshot(tiny_gptj_lm.model)
        for name, expected in by_hand[n - 1].items():
            torch.testing.assert_close(weights[name], expected, rtol=0, atol=1e-6, msg=f"checkpoint {n}: {name}")
        if n > 1:
            assert any(not torch.equal(weights[k], by_hand[n - 2][k]) for k in weights), f"checkpoint {n} equals checkpoint {n - 1}"
    assert checkpoint_cases("sequential", 0) == []


def test_the_model_is_restored_after_every_checkpoint(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    original = snapshot(tiny_gptj_lm.model)
    chain_deltas(tiny_gptj_lm, REQUESTS[:2], tmp_path)
    with applied(tiny_gptj_lm, load_deltas(tmp_path), checkpoint_cases("sequential", 2)):
        assert not all(torch.equal(t, original[k]) for k, t in snapshot(tiny_gptj_lm.model).items())
    assert all(torch.equal(t, original[k]) for k, t in snapshot(tiny_gptj_lm.model).items())


def test_growing_the_chain_reuses_every_stored_delta(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    first = chain_deltas(tiny_gptj_lm, REQUESTS[:2], tmp_path)
    keys_before = DeltaStore(tmp_path).keys()
    grown = chain_deltas(tiny_gptj_lm, REQUESTS, tmp_path)
    assert (first["computed"], first["reused"]) == (2, 0)
    assert (grown["computed"], grown["reused"]) == (2, 2)
    assert keys_before < DeltaStore(tmp_path).keys()


def test_an_edit_is_keyed_by_every_request_before_it(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    """Changing edit 1 changes the key of edit 2 (computed on a different model); changing edit 2 leaves edit 1's."""
    chain_deltas(tiny_gptj_lm, REQUESTS[:2], tmp_path / "a")
    changed_first = [EditRequest("The capital of {} is", "Elsewhere", " Town", " Paris"), REQUESTS[1]]
    changed_second = [REQUESTS[0], EditRequest("The capital of {} is", "Elsewhere", " Town", " Paris")]
    chain_deltas(tiny_gptj_lm, changed_first, tmp_path / "b")
    chain_deltas(tiny_gptj_lm, changed_second, tmp_path / "c")
    keys = {name: json.loads((tmp_path / name / INDEX).read_text())["cases"] for name in "abc"}
    assert keys["a"]["edit-0002"]["key"] != keys["b"]["edit-0002"]["key"]
    assert keys["a"]["edit-0001"]["key"] == keys["c"]["edit-0001"]["key"]
    assert keys["a"]["edit-0002"]["key"] != keys["c"]["edit-0002"]["key"]


def test_checkpoints_past_the_chain_are_refused() -> None:
    with pytest.raises(ValueError, match="general.checkpoints"):
        config(edits=2, checkpoints=[0, 1, 3])
    with pytest.raises(ValueError, match="general.checkpoints"):
        config(edits=4, checkpoints=[0, 3, 1])
    with pytest.raises(ValueError, match="general.batch_methods"):
        config(methods=["ROME"], batch_methods=["MEMIT"])


def config(**changes: object) -> General:
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))["general"]
    return General.model_validate({**raw, **changes})


def tiny_probes(lm: LoadedModel) -> Probes:
    item = Example("0", "The capital of Land0 is", ("City0",))
    return Probes({name: [item] for name in TASKS}, [" The cat sat on the mat.", " Hello there, world"], [lm.tokenizer("some text here")["input_ids"]])


def test_a_sequential_run_measures_perplexity_after_every_edit_and_the_tasks_at_each_checkpoint(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    chain_deltas(tiny_gptj_lm, REQUESTS[:3], tmp_path)
    original = snapshot(tiny_gptj_lm.model)
    probes = tiny_probes(tiny_gptj_lm)
    run, _ = chain_run(tiny_gptj_lm, probes, config(edits=3, checkpoints=[0, 1, 3]), "sequential", load_deltas(tmp_path), None)
    assert all(torch.equal(t, original[k]) for k, t in snapshot(tiny_gptj_lm.model).items())
    assert sorted(run["me_ppl"]) == ["1", "2", "3"] and sorted(run["checkpoints"]) == ["1", "3"]
    assert set(run["checkpoints"]["3"]["tasks"]) == set(TASKS)
    unedited, _ = unedited_run(tiny_gptj_lm, probes, config(edits=3, checkpoints=[0, 1, 3]))
    assert run["me_ppl"]["3"] != unedited["me_ppl"]["0"]  # the edits moved the model
    with applied(tiny_gptj_lm, load_deltas(tmp_path), checkpoint_cases("sequential", 1)):
        assert sentence_perplexities(tiny_gptj_lm, probes.me_ppl, 10) == run["me_ppl"]["1"]


def test_the_points_of_a_chain_fan_out_over_workers_with_the_same_bytes(tiny_gptj_lm: LoadedModel, tmp_path: Path) -> None:
    """Each worker applies the chain's first n deltas itself: the run is the one a single process writes."""
    chain_deltas(tiny_gptj_lm, REQUESTS[:3], tmp_path)
    probes, settings = tiny_probes(tiny_gptj_lm), config(edits=3, checkpoints=[0, 1, 3])
    one, _ = chain_run(tiny_gptj_lm, probes, settings, "sequential", load_deltas(tmp_path), None)
    two, timings = chain_run(tiny_gptj_lm, probes, settings, "sequential", load_deltas(tmp_path), None, workers=2, loader=tiny_worker)
    assert json.dumps(one, sort_keys=False) == json.dumps(two, sort_keys=False)
    assert len(timings["me_ppl_seconds"]) == 3 and len(timings["checkpoint_seconds"]) == 2


def test_batch_cases_edit_each_checkpoints_first_n_requests_at_once(tiny_gptj_lm: LoadedModel) -> None:
    cases = batch_cases(REQUESTS, [0, 1, 3])
    assert list(cases) == ["batch-0001", "batch-0003"]
    assert cases["batch-0003"].requests == tuple(REQUESTS[:3]) and cases["batch-0003"].base is None
    assert checkpoint_cases("batch", 3) == ["batch-0003"]


class FiresOnCapitals:
    """A stand-in for an installed memory component: fires on prompts that mention a capital."""

    def diagnostics(self, lm: LoadedModel, prompts: list[str]) -> dict[str, list[float]]:
        return {"codebook_hit": [float("capital" in p) for p in prompts]}


def test_checkpoints_record_what_installed_components_report_on_each_tasks_prompts(tiny_gptj_lm: LoadedModel) -> None:
    probes = tiny_probes(tiny_gptj_lm)
    unedited, _ = unedited_run(tiny_gptj_lm, probes, config())
    assert unedited["checkpoints"]["0"]["diagnostics"] == {}
    install(tiny_gptj_lm.model, "memory", FiresOnCapitals())
    try:
        with_memory, _ = unedited_run(tiny_gptj_lm, probes, config())
    finally:
        uninstall(tiny_gptj_lm.model, "memory")
    assert with_memory["checkpoints"]["0"]["diagnostics"] == {name: {"codebook_hit": [1.0]} for name in TASKS}


def serac(tmp_path: Path, encoder_dir: Path) -> SERAC:  # noqa: F811
    write_json(tmp_path / CLASSIFIER_FILE, {"encoder": "all-minilm-l6-v2", "scale": 1.455})
    hparams = SERACHparams(encoder="all-minilm-l6-v2", train_file="unused.json", holdout=1, steps=1, lr=0.1,
                           classifier="frozen_scale", finetune_steps=1, finetune_lr=1e-5, finetune_batch=1, counterfactual="freeze_cntr", cntr_steps=1, cntr_lr=1e-5, cntr_batch=1, seed=0)
    serac = SERAC(hparams, Artifacts(method_dir=tmp_path))
    serac.__dict__["_encoder"] = SentenceEncoder(encoder_dir)  # the fixture's files, not the workspace's
    return serac


def test_a_memory_method_line_routes_the_task_prompts_and_counts_them(tiny_gptj_lm: LoadedModel, tmp_path: Path, encoder_dir: Path) -> None:  # noqa: F811
    """The chain of a memory method grows its memory; with its router installed the tasks see the edit
    (their prompt is the first edit's, so in scope) and the diagnostics count the routed prompts; without
    it the run is refused instead of showing the unedited model."""
    memory_method = serac(tmp_path / "classifier", encoder_dir)
    store_deltas(tiny_gptj_lm, "SERAC", memory_method, sequential_cases(REQUESTS[:3]), tmp_path / "chain", {"suite": "chain"})
    probes = tiny_probes(tiny_gptj_lm)
    settings = config(edits=3, checkpoints=[0, 1, 3])
    with pytest.raises(NoRouterError, match="SERAC"):
        chain_run(tiny_gptj_lm, probes, settings, "sequential", load_deltas(tmp_path / "chain"), None)
    router = memory_method.router()
    run, _ = chain_run(tiny_gptj_lm, probes, settings, "sequential", load_deltas(tmp_path / "chain"), router)
    unedited, _ = unedited_run(tiny_gptj_lm, probes, settings)
    assert unedited["checkpoints"]["0"]["diagnostics"] == {}
    for n in ("1", "3"):
        assert run["checkpoints"][n]["diagnostics"] == {name: {"routed": [100.0]} for name in TASKS}
    deltas = load_deltas(tmp_path / "chain")
    memory = [deltas[case] for case in checkpoint_cases("sequential", 3)]
    (prompt,) = [e.prompt for e in probes.tasks["nq"]]
    (routed,) = router.rewrite(memory, [prompt])
    expected = greedy(tiny_gptj_lm, [routed], settings.tasks.nq.max_new_tokens, 1)[0].new
    assert run["checkpoints"]["3"]["tasks"]["nq"][0]["new"] == expected
    assert run["checkpoints"]["3"]["tasks"]["nq"][0]["full"].startswith(prompt)  # the task prompt, not the routed text
    assert run["me_ppl"]["3"] == unedited["me_ppl"]["0"]  # perplexity reads the weights only
