"""Fanning the edit and evaluate stages out over worker processes: same bytes as one process, on a tiny model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from fixtures_models import build_tiny, single_thread, tiny_gptj_lm  # noqa: F401
from kepitfalls import editing, layout, workers
from kepitfalls.atomic import write_json, write_jsonl
from kepitfalls.data.counterfact import CounterFactRecord
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


def test_a_method_with_a_router_is_scored_in_this_process_with_its_router_installed(
    tiny_gptj_lm: LoadedModel, suite_on_disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process would have no router (memory deltas raise NoRouterError there) and would keep its
    routing counts: whatever `workers` says, such a method's cases are scored here, inside `installed`."""

    class Passthrough(Router):
        def rewrite(self, memory, prompts):
            return [None] * len(prompts)

    class Routed(FineTune):
        def router(self) -> Router:
            return Passthrough()

    hparams = FTHparams(layers=[1], num_steps=2, lr=1e-2, weight_decay=0.0, objective="target_new", norm_constraint=None)
    monkeypatch.setattr(editing, "build_method", lambda params, name: Routed(hparams))
    out = tmp_path / "deltas"
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    editing.compute_pre(tiny_gptj_lm, SUITE, layout.pre_dir(SUITE))
    seen: list[object] = []
    score = editing._score

    def spy(*args):
        seen.append((os.getpid(), getattr(tiny_gptj_lm.model, ROUTER_ATTRIBUTE, None)))
        return score(*args)

    monkeypatch.setattr(editing, "_score", spy)
    evaluation = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, out, workers=2, loader=None)  # no loader: no fan-out
    assert evaluation.metrics["ES_n"] == 4.0
    assert len(seen) == 4 and all(pid == os.getpid() and isinstance(router, Passthrough) for pid, router in seen)
    assert getattr(tiny_gptj_lm.model, ROUTER_ATTRIBUTE, None) is None
