"""Fanning the edit and evaluate stages out over worker processes: same bytes as one process, on a tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from fixtures_models import build_tiny, single_thread, tiny_gptj_lm  # noqa: F401
from kepitfalls import editing, layout, workers
from kepitfalls.atomic import write_json, write_jsonl
from kepitfalls.data.counterfact import CounterFactRecord
from kepitfalls.deltas.codecs import MemoryDelta
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.router import ROUTER_ATTRIBUTE, Router
from kepitfalls.suites.common import EditCase, save_records

SUITE = "counterfact"


def tiny_worker() -> LoadedModel:
    """A worker's model: the fixture's tiny GPT-J, one thread, as the stages' `worker_model` sets up."""
    torch.set_num_threads(1)
    return build_tiny("tiny-gptj")


def record(case_id: int) -> CounterFactRecord:
    return CounterFactRecord(
        case_id=case_id, prompt="The capital of {} is", subject=f"Land{case_id}", relation_id="P36",
        target_new=" Rome", target_true=" Paris", paraphrase_prompts=("Its capital is", "Capital of it:"),
        neighborhood_prompts=("The capital of France is", "Paris is in"), attribute_prompts=(), generation_prompts=(),
    )


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def suite_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[CounterFactRecord]:
    """Four CounterFact records as the select stage writes them; FT (2 steps) stands in for a params-built method."""
    records = [record(i) for i in range(1, 5)]
    records_file = tmp_path / "suites" / f"{SUITE}.json"
    records_file.parent.mkdir(parents=True)
    save_records(records_file, SUITE, records, {})
    monkeypatch.setattr(layout, "suite_records", lambda suite: records_file)
    monkeypatch.setattr(layout, "pre_dir", lambda suite: tmp_path / "pre" / suite)
    hparams = FTHparams(layers=[1], num_steps=2, lr=1e-2, weight_decay=0.0, objective="target_new", norm_constraint=None)
    monkeypatch.setattr(editing, "build_method", lambda params, name: FineTune(hparams))
    return records


def evaluation_bytes(tmp_path: Path, name: str, evaluation) -> tuple[bytes, bytes]:
    write_json(tmp_path / f"{name}.json", evaluation.metrics)
    write_jsonl(tmp_path / f"{name}.jsonl", evaluation.records)
    return (tmp_path / f"{name}.json").read_bytes(), (tmp_path / f"{name}.jsonl").read_bytes()


def test_two_workers_store_and_score_exactly_what_one_does(tiny_gptj_lm: LoadedModel, suite_on_disk, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, one)
    second = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, two, workers=2, loader=tiny_worker)
    assert (first["computed"], second["computed"]) == (4, 4)
    assert tree_digest(one) == tree_digest(two)  # every delta and the index, byte for byte

    editing.compute_pre(tiny_gptj_lm, SUITE, layout.pre_dir(SUITE))
    serial = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, one)
    parallel = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, two, workers=2, loader=tiny_worker)
    assert serial.metrics["ES_n"] == 4.0
    assert evaluation_bytes(tmp_path, "serial", serial) == evaluation_bytes(tmp_path, "parallel", parallel)


def test_a_chain_of_cases_runs_in_one_worker_on_its_base(tiny_gptj_lm: LoadedModel, suite_on_disk, tmp_path: Path, monkeypatch) -> None:
    """A case computed on another's delta (ConflictEdit, RoundEdit) is fanned out with it, after it."""
    first, second = (EditRequest("The capital of {} is", f"Land{i}", " Rome", " Paris") for i in (1, 2))
    cases = {
        "a/e1": EditCase("a/e1", (first,)), "a/e2": EditCase("a/e2", (second,), base="a/e1"),
        "b/e1": EditCase("b/e1", (second,)), "b/e2": EditCase("b/e2", (first,), base="b/e1"),
    }
    assert [[case_id for case_id, _, _ in group] for group in editing._groups(cases, {c: c for c in cases})] == [
        ["a/e1", "a/e2"], ["b/e1", "b/e2"],
    ]
    monkeypatch.setattr(editing, "suite_cases", lambda suite, records: cases)
    one, two = tmp_path / "one", tmp_path / "two"
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, one)
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, two, workers=2, loader=tiny_worker)
    assert tree_digest(one) == tree_digest(two)
    index = json.loads((two / editing.INDEX).read_text())["cases"]
    assert index["a/e2"]["base"] == "a/e1" and index["a/e2"]["key"] != index["b/e1"]["key"]


def test_the_worker_count_comes_from_the_environment_then_params_then_the_machine(
    tiny_gptj_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Runtime:
        workers = 3

    class Params:
        runtime = Runtime()

    monkeypatch.delenv("KEPITFALLS_WORKERS", raising=False)
    assert workers.worker_count(Params(), tiny_gptj_lm) == 3
    monkeypatch.setenv("KEPITFALLS_WORKERS", "2")
    assert workers.worker_count(Params(), tiny_gptj_lm) == 2
    monkeypatch.delenv("KEPITFALLS_WORKERS")
    Runtime.workers = None
    assert workers.worker_count(Params(), tiny_gptj_lm) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("KEPITFALLS_WORKERS", "0")
    with pytest.raises(ValueError, match="KEPITFALLS_WORKERS"):
        workers.worker_count(Params(), tiny_gptj_lm)


def test_fanning_out_without_a_loader_is_refused(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="need a loader"):
        workers.map_cases(tiny_gptj_lm, None, lambda lm, item: item, [1, 2], 2, "test")


class FactRouter(Router):
    """Prepends the applied memory's facts to the prompts that name a subject in it (a stand-in for SERAC's scope)."""

    def rewrite(self, memory, prompts):
        entries = [entry for delta in memory for entry in delta.entries]
        return [next((f"{e['fact']} {prompt}" for e in entries if e["subject"] in prompt), None) for prompt in prompts]


class MemoryMethod(FineTune):
    """A memory-based method for the test: each edit stores its fact; scoring sees it through `FactRouter`."""

    def router(self) -> Router:
        return FactRouter()

    def edit_batch(self, lm, requests):
        return MemoryDelta("FT", [{"fact": r.rewrite_prompt + r.target_new, "subject": r.subject} for r in requests])


def test_a_memory_method_fans_out_with_its_router_in_every_worker(
    tiny_gptj_lm: LoadedModel, suite_on_disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker installs its copy of the router around each record; metrics, rows and routing counts
    (summed over records) are the bytes one process gives, and the model is left without a router."""
    hparams = FTHparams(layers=[1], num_steps=2, lr=1e-2, weight_decay=0.0, objective="target_new", norm_constraint=None)
    monkeypatch.setattr(editing, "build_method", lambda params, name: MemoryMethod(hparams))
    out = tmp_path / "deltas"
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    editing.compute_pre(tiny_gptj_lm, SUITE, layout.pre_dir(SUITE))
    serial = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    parallel = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, out, workers=3, loader=tiny_worker)
    assert serial.metrics["routing_score_prompts_seen"] > serial.metrics["routing_score_prompts_routed"] > 0
    assert evaluation_bytes(tmp_path, "serial", serial) == evaluation_bytes(tmp_path, "parallel", parallel)
    assert getattr(tiny_gptj_lm.model, ROUTER_ATTRIBUTE, None) is None


def pid_loader() -> int:
    return os.getpid()


def computed_where(lm: int, item: int) -> tuple[int, int]:
    """The item and the process that computed it (`lm` is the loader's value: a worker's pid, or the caller's)."""
    if item < 0:
        raise ValueError(f"bad item {item}")
    return item, os.getpid()


@pytest.mark.parametrize("count", [2, 3, 8])
def test_this_process_takes_cases_too_and_results_keep_input_order(count: int) -> None:
    """The first case is always this process's (the others are still spawning); order is the input's."""
    items = list(range(5))
    results = workers.map_cases(os.getpid(), pid_loader, computed_where, items, count, "test")
    assert [item for item, _ in results] == items
    assert results[0][1] == os.getpid()


def test_a_worker_error_is_raised_here() -> None:
    with pytest.raises((ValueError, RuntimeError), match="bad item -1"):  # raised here or sent by a worker
        workers.map_cases(os.getpid(), pid_loader, computed_where, [0, 1, 2, -1], 2, "test")


def tensor_after_the_worker_left(marker: Path, lm: int, item: int) -> torch.Tensor:
    """Case 1 (a worker's: this process takes case 0 first) leaves a marker; case 0 waits for it and for the
    worker to exit, so that case 1's tensor is read from the queue only after its sender is gone."""
    if item == 1:
        marker.write_text(str(os.getpid()))
    else:
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
    return torch.full((256, 256), float(item), dtype=torch.float64)


def test_a_tensor_from_a_worker_that_has_exited_still_arrives(tmp_path: Path) -> None:
    results = workers.map_cases(os.getpid(), pid_loader, partial(tensor_after_the_worker_left, tmp_path / "marker"), [0, 1], 2, "test")
    assert (tmp_path / "marker").read_text() != str(os.getpid())
    assert [float(result[0, 0]) for result in results] == [0.0, 1.0] and results[1].shape == (256, 256)

