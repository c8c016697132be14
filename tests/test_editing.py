"""The edit and evaluate stages' core (editing.py) on a tiny model: what they store, reuse, refuse and recompute."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from fixtures_models import single_thread, tiny_gptj_lm  # noqa: F401
from kepitfalls import atomic, editing, layout
from kepitfalls.data.counterfact import CounterFactRecord
from kepitfalls.deltas import CorruptDeltaError, DeltaStore
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.suites.common import InvalidEditCaseError, save_records

SUITE = "counterfact"


def record(case_id: int, **changes: object) -> CounterFactRecord:
    fields = dict(
        case_id=case_id, prompt="The capital of {} is", subject=f"Land{case_id}", relation_id="P36",
        target_new=" Rome", target_true=" Paris", paraphrase_prompts=("Its capital is",),
        neighborhood_prompts=("The capital of France is",), attribute_prompts=(), generation_prompts=(),
    )
    return CounterFactRecord(**{**fields, **changes})


def hparams(lr: float = 1e-2) -> FTHparams:
    return FTHparams(layers=[1], num_steps=2, lr=lr, weight_decay=0.0, objective="target_new", norm_constraint=None)


@pytest.fixture
def suite_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write records as the select stage does; FT with `hparams(lr)` stands in for the params-built method."""
    records_file = tmp_path / "suites" / f"{SUITE}.json"
    monkeypatch.setattr(layout, "suite_records", lambda suite: records_file)
    learning_rate = {"lr": 1e-2}
    monkeypatch.setattr(editing, "build_method", lambda params, name: FineTune(hparams(learning_rate["lr"])))

    def write(records: list[CounterFactRecord], lr: float = 1e-2) -> Path:
        records_file.parent.mkdir(parents=True, exist_ok=True)
        save_records(records_file, SUITE, records, {})
        learning_rate["lr"] = lr
        return tmp_path / "deltas"

    return write


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_run_that_reuses_every_delta_leaves_the_delta_directory_byte_identical(tiny_gptj_lm: LoadedModel, suite_on_disk) -> None:
    out = suite_on_disk([record(1), record(2)])
    first = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    before = tree_digest(out)
    second = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    assert (first["computed"], second["computed"], second["reused"]) == (2, 0, 2)
    assert tree_digest(out) == before  # run statistics live outside what DVC hashes


def test_evaluation_refuses_deltas_of_other_hyper_parameters(tiny_gptj_lm: LoadedModel, suite_on_disk) -> None:
    out = suite_on_disk([record(1), record(2)])
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    suite_on_disk([record(1), record(2)], lr=5e-3)  # params changed, the edit stage killed before it ran
    with pytest.raises(editing.StaleDeltasError, match="do not match the current method, hyper-parameters"):
        editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, out)


def test_evaluation_refuses_deltas_of_other_requests(tiny_gptj_lm: LoadedModel, suite_on_disk) -> None:
    out = suite_on_disk([record(1), record(2)])
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    suite_on_disk([record(1), record(2, target_new=" Oslo")])
    with pytest.raises(editing.StaleDeltasError, match=r"cases 2 differ"):
        editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, out)


def test_current_deltas_load_for_evaluation(tiny_gptj_lm: LoadedModel, suite_on_disk) -> None:
    out = suite_on_disk([record(1), record(2)])
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    records = [record(1), record(2)]
    expected = editing.delta_keys(tiny_gptj_lm, "FT", FineTune(hparams()), editing.suite_cases(SUITE, records))
    assert set(editing.load_deltas(out, expected)) == {"1", "2"}


@pytest.mark.parametrize("damage", [b"", b"\x08\x00\x00"], ids=["empty", "truncated"])
def test_a_corrupt_delta_is_named_then_recomputed(
    tiny_gptj_lm: LoadedModel, suite_on_disk, damage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    out = suite_on_disk([record(1), record(2)])
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    before = tree_digest(out)
    store = DeltaStore(out)
    key = sorted(store.keys())[0]
    store.path(key).write_bytes(damage)  # a crash after an un-synced rename
    with pytest.raises(CorruptDeltaError, match=f"{key}.safetensors: corrupt delta"):
        store.get(key)
    summary = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    assert (summary["computed"], summary["reused"]) == (1, 1)
    assert f"{key}.safetensors: corrupt delta" in capsys.readouterr().err
    assert tree_digest(out) == before


def test_writes_are_synced_before_the_rename_and_the_directory_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(f"fsync:{Path(os.readlink(f'/proc/self/fd/{fd}')).name}"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic.write_text(tmp_path / "out" / "file.txt", "x")
    assert len(calls) == 3 and calls[0].startswith("fsync:.file.txt.") and calls[1:] == ["replace", "fsync:out"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"subject": "  "}, "subject '  ' is empty"),
        ({"prompt": "The capital is", "subject": "Land1"}, "subject 'Land1' is not in the prompt"),
        ({"prompt": "The capital of {} and {} is"}, "exactly one '{}', has 2"),
        ({"prompt": "The capital of Land1 is", "subject": "Land1"}, "exactly one '{}', has 0"),
        ({"target_new": " "}, "target_new ' ' is empty"),
    ],
)
def test_edit_requests_are_checked_once_for_every_method(
    tiny_gptj_lm: LoadedModel, suite_on_disk, changes: dict, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = suite_on_disk([record(1), record(7, **changes)])
    monkeypatch.setattr(FineTune, "edit", lambda *args: pytest.fail("a method ran before the requests were checked"))
    with pytest.raises(InvalidEditCaseError) as error:
        editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, out)
    assert f"suite {SUITE} (data/suites/{SUITE}.json), case '7', request 0: " in str(error.value)
    assert problem in str(error.value)


def test_request_problems_are_empty_for_a_good_request() -> None:
    assert record(1).request.problems() == []
    assert dataclasses.replace(record(1).request, target_true=None).problems() == []
