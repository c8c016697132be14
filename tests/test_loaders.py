"""Loaders against the real mirrored files: counts from each SOURCE.md, content, and failure messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from kepitfalls.data.counterfact import load_counterfact, load_counterfact_split
from kepitfalls.data.errors import InvalidFileError, MalformedRecordError
from kepitfalls.data.gsm8k import load_gsm8k
from kepitfalls.data.locality import distract_neighbor, other_attribution
from kepitfalls.data.mquake import load_mquake, load_mquake_prompts
from kepitfalls.data.nq import load_nq
from kepitfalls.data.piqa import load_piqa
from kepitfalls.data.pitfalls import load_conflict_edit, load_relation_prompts, load_round_edit
from kepitfalls.data.portability import load_portability
from kepitfalls.data.records import select_subset, select_subset_where
from kepitfalls.params import load_params
from kepitfalls.data.samsum import load_samsum
from kepitfalls.data.sst2 import load_sst2
from kepitfalls.data.zsre import load_knowedit_zsre, load_zsre

ONE_HOP_CF = "easyedit_portability/portability/One Hop/counterfact_portability_gpt4.json"
ONE_HOP_ZSRE = "easyedit_portability/portability/One Hop/zsre_mend_eval_portability_gpt4.json"
SUBJECT_REPLACE_CF = "easyedit_portability/portability/Subject Replace/counterfact_subject_replace.json"
PITFALLS = "pitfalls_conflictedit_roundedit"

# (file in the mirror, how to load it, record count stated in that benchmark's SOURCE.md)
COUNTS: list[tuple[str, Callable[[Path], list[Any]], int]] = [
    ("counterfact/easyedit/counterfact-train.json", load_counterfact_split, 10_000),
    ("counterfact/easyedit/counterfact-val.json", load_counterfact_split, 1_919),
    ("counterfact/easyedit/counterfact-edit.json", load_counterfact_split, 10_000),
    (ONE_HOP_CF, load_counterfact, 1_031),
    (SUBJECT_REPLACE_CF, load_counterfact, 213),
    (ONE_HOP_CF, lambda p: load_portability(p, "counterfact", "one_hop"), 1_031),
    (SUBJECT_REPLACE_CF, lambda p: load_portability(p, "counterfact", "subject_replace"), 213),
    (ONE_HOP_ZSRE, lambda p: load_portability(p, "zsre", "one_hop"), 1_037),
    ("easyedit_portability/portability/Subject Replace/zsre_subject_replace.json",
     lambda p: load_portability(p, "zsre", "subject_replace"), 293),
    ("easyedit_portability/portability/Inverse Relation/zsre_inverse_relation.json",
     lambda p: load_portability(p, "zsre", "inverse_relation"), 385),
    (ONE_HOP_ZSRE, load_zsre, 1_037),
    ("zsre/zsre_mend_train-1k.json", load_zsre, 1_000),
    ("zsre/knowedit_derived/ZsRE-test-all.json", load_knowedit_zsre, 1_304),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, 429),
    ("mquake/prompts/rel-prompts.json", lambda p: list(load_mquake_prompts(p.parent).rel_prompts), 37),
    ("mquake/prompts/templates/cloze_templates.json", lambda p: list(load_mquake_prompts(p.parents[1]).cloze_templates), 44),
    ("mquake/prompts/templates/question_templates.json",
     lambda p: list(load_mquake_prompts(p.parents[1]).question_templates), 44),
    *[(f"{PITFALLS}/{model}/{kind}_edit.json", load_conflict_edit, n)
      for model, counts in {"GPT-J": (2500, 2500, 2500), "GPT2-XL": (2500, 2000, 2500)}.items()
      for kind, n in zip(("reverse", "composite", "coverage"), counts)],
    *[(f"{PITFALLS}/{model}/{kind}.json", load_round_edit, 2_500) for model in ("GPT-J", "GPT2-XL") for kind in ("easy", "hard")],
    *[(f"{PITFALLS}/{model}/conflict_prompts.json", load_relation_prompts, 14) for model in ("GPT-J", "GPT2-XL")],
    *[(f"{PITFALLS}/{model}/round_prompts.json", load_relation_prompts, 10) for model in ("GPT-J", "GPT2-XL")],
    ("piqa/valid.jsonl", load_piqa, 1_838),
    ("natural_questions/NQ-open.dev.jsonl", load_nq, 3_610),
    ("sst2/dev.tsv", load_sst2, 872),
    ("gsm8k/test.jsonl", load_gsm8k, 1_319),
    ("samsum/test.jsonl", load_samsum, 819),
]


@pytest.mark.parametrize(("relpath", "load", "count"), COUNTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(COUNTS)])
def test_every_mirrored_file_loads_with_its_stated_count(relpath: str, load, count: int, data_mirror: Path) -> None:
    records = load(data_mirror / relpath)
    assert len(records) == count
    ids = [getattr(r, "case_id", None) for r in records]
    assert None in ids or len(set(ids)) == len(ids)  # case ids are unique wherever records have them


def test_folder_arguments_find_the_default_files(data_mirror: Path) -> None:
    assert len(load_counterfact_split(data_mirror / "counterfact", "val")) == 1_919
    assert len(load_portability(data_mirror / "easyedit_portability", "zsre", "inverse_relation")) == 385
    assert len(load_conflict_edit(data_mirror / PITFALLS, "GPT2-XL", "composite")) == 2_000
    assert len(load_relation_prompts(data_mirror / PITFALLS, "GPT-J", "round")) == 10
    for load, folder, count in [(load_zsre, "zsre", 1_000), (load_knowedit_zsre, "zsre", 1_304), (load_mquake, "mquake", 429),
                                (load_piqa, "piqa", 1_838), (load_nq, "natural_questions", 3_610), (load_sst2, "sst2", 872),
                                (load_gsm8k, "gsm8k", 1_319), (load_samsum, "samsum", 819)]:
        assert len(load(data_mirror / folder)) == count, folder


def test_crlf_files_leave_no_carriage_returns(data_mirror: Path) -> None:
    path = data_mirror / "counterfact/easyedit/counterfact-train.json"
    assert b"\r\n" in path.read_bytes()
    record = load_counterfact_split(path)[0]
    assert (record.case_id, record.prompt, record.target_true) == (2, "Toko Yasuda, the", "guitar")
    assert not any("\r" in value for r in load_zsre(data_mirror / "zsre") for value in (r.src, r.loc_ans, r.alt))


def test_counterfact_records(data_mirror: Path) -> None:
    record = load_counterfact(data_mirror / ONE_HOP_CF)[0]
    assert record.case_id == 4482 and record.relation_id == "P19"
    assert record.rewrite_prompt == "Spike Hughes originates from"
    assert (record.target_new, record.target_true) == ("Philadelphia", "London")
    assert len(record.paraphrase_prompts) == 2 and len(record.neighborhood_prompts) == 10
    assert record.request.rewrite_prompt == record.rewrite_prompt


def test_portability_probes_follow_the_metric_spec(data_mirror: Path) -> None:
    folder = data_mirror / "easyedit_portability"
    replaced = load_portability(folder, "counterfact", "subject_replace")[0]
    assert replaced.probes[0].prompt == "Mary Eliza Wright passed away in" and replaced.probes[0].answer == "Birmingham"
    inverse = load_portability(folder, "zsre", "inverse_relation")[0]
    assert inverse.request.rewrite_prompt == "Who is Claire Clairmont's sister?"
    assert inverse.request.prompt == "Who is {}'s sister?" and inverse.request.target_new == "Marian Clairmont"
    assert inverse.probes[0].prompt == "Who is Marian Clairmont's sister?" and inverse.probes[0].answer == "Claire Clairmont"
    hop = load_portability(folder, "zsre", "one_hop")[0]
    assert hop.request.target_true == "1998" and hop.probes[0].answer == "Athletics"
    with pytest.raises(ValueError, match="counterfact/inverse_relation"):
        load_portability(folder, "counterfact", "inverse_relation")


def test_constructed_locality_sets(data_mirror: Path) -> None:
    cases = load_counterfact(data_mirror / ONE_HOP_CF)
    neighbours = distract_neighbor(cases)
    assert len(neighbours) == len(cases) and all(r.constructed for r in neighbours)
    assert neighbours[0].prompts[0] == "Spike Hughes originates from Philadelphia. Max Mosley originates from"
    assert neighbours[0].continuation == "London" and len(neighbours[0].prompts) == 10
    attribution = other_attribution(load_knowedit_zsre(data_mirror / "zsre"))
    assert len(attribution) == 1_304 and all(r.constructed and r.probes for r in attribution)
    first = attribution[0]
    assert first.request.subject == "Epaspidoceras" and first.probes[0].prompt == "The taxon rank of Epaspidoceras is"
    assert first.probes[0].answer == "genus"


def test_mquake_records_and_prompts(data_mirror: Path) -> None:
    record = load_mquake(data_mirror / "mquake")[0]
    assert record.case_id == 7417 and len(record.requested_rewrite) == 4 and len(record.questions) == 3
    assert record.requested_rewrite[0].cloze == "Hey Jude was performed by"
    assert record.new_answer == "Arabic" and record.edit_triples[0] == ("Q607742", "P175", "Q1744")
    prompts = load_mquake_prompts(data_mirror / "mquake")
    assert prompts.multihop.startswith("Q: What is the country where The Rotunda is located? A:")
    assert prompts.cloze_templates["P17"] == "[X] is located in the country of __"


def test_pitfalls_records(data_mirror: Path) -> None:
    composite = load_conflict_edit(data_mirror / PITFALLS, "GPT2-XL", "composite")[0]
    assert composite.prerequisites == (0,) and composite.rule == "P25&P26>P22"
    assert composite.edits[1].true_object is not None and composite.edits[0].true_object is None
    coverage = load_conflict_edit(data_mirror / PITFALLS, "GPT-J", "coverage")[0]
    assert coverage.rule is None and coverage.edits[1].object == coverage.edits[0].new_object
    rounds = load_round_edit(data_mirror / PITFALLS, "GPT-J", "easy")
    assert all(r.edit.object in r.true_objects and r.edit.new_object not in r.true_objects for r in rounds)
    assert all(len(v) == 10 for v in load_relation_prompts(data_mirror / PITFALLS, "GPT-J", "conflict").values())


def test_task_records(data_mirror: Path) -> None:
    piqa = load_piqa(data_mirror / "piqa")
    assert {r.label for r in piqa} == {0, 1} and piqa[0].label == 0
    assert load_nq(data_mirror / "natural_questions")[0].answers == ("14 December 1972 UTC", "December 1972")
    sst2 = load_sst2(data_mirror / "sst2")
    assert sst2[0].label == 1 and sst2[0].sentence.startswith("it 's a charming")
    gsm = load_gsm8k(data_mirror / "gsm8k")[0]
    assert gsm.final_answer == "18" and "####" not in gsm.rationale
    assert load_samsum(data_mirror / "samsum")[0].case_id == "13862856"


# --- failure messages ---------------------------------------------------------------------------------


def test_truncated_json_names_the_file(data_mirror: Path, tmp_path: Path) -> None:
    path = tmp_path / "counterfact_portability_gpt4.json"
    path.write_bytes((data_mirror / ONE_HOP_CF).read_bytes()[:50_000])
    with pytest.raises(InvalidFileError, match="counterfact_portability_gpt4.json") as caught:
        load_counterfact(path)
    assert caught.value.file == path


def test_truncated_jsonl_names_the_file_and_line(data_mirror: Path, tmp_path: Path) -> None:
    path = tmp_path / "NQ-open.dev.jsonl"
    data = (data_mirror / "natural_questions/NQ-open.dev.jsonl").read_bytes()
    path.write_bytes(data[: data.index(b"\n", 1000) + 20])
    with pytest.raises(InvalidFileError, match=r"NQ-open\.dev\.jsonl: invalid JSON on line \d+"):
        load_nq(path)


def test_a_json_object_where_a_list_belongs_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "zsre.json"
    path.write_text('{"src": "q"}')
    with pytest.raises(InvalidFileError, match="zsre.json: expected a JSON list"):
        load_zsre(path)


def broken_copy(source: Path, target: Path, index: int, edit: Callable[[dict], None]) -> Path:
    records = json.loads(source.read_text(encoding="utf-8"))
    edit(records[index])
    target.write_text(json.dumps(records), encoding="utf-8")
    return target


@pytest.mark.parametrize(("relpath", "load", "edit", "field"), [
    (ONE_HOP_CF, load_counterfact, lambda r: r["requested_rewrite"].pop("target_new"), "requested_rewrite.target_new"),
    (ONE_HOP_CF, load_counterfact, lambda r: r["requested_rewrite"].update(prompt="no slot"), "requested_rewrite.prompt"),
    (ONE_HOP_CF, lambda p: load_portability(p, "counterfact", "one_hop"), lambda r: r["portability"].pop("New Answer"),
     "portability.New Answer"),
    ("zsre/zsre_mend_train-1k.json", load_zsre, lambda r: r.pop("alt"), "alt"),
    ("zsre/zsre_mend_train-1k.json", load_zsre, lambda r: r.update(answers="uniform"), "answers"),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, lambda r: r["new_single_hops"][1].pop("cloze"), "new_single_hops[1].cloze"),
    (f"{PITFALLS}/GPT-J/reverse_edit.json", load_conflict_edit, lambda r: r["edits"].pop(), "edits"),
    (f"{PITFALLS}/GPT-J/easy.json", load_round_edit, lambda r: r["edit"]["subject"].pop("label"), "edit.subject.label"),
    ("counterfact/easyedit/counterfact-val.json", load_counterfact_split, lambda r: r.update(case_id="10"), "case_id"),
])
def test_a_broken_record_names_file_index_and_field(relpath, load, edit, field, data_mirror: Path, tmp_path: Path) -> None:
    path = broken_copy(data_mirror / relpath, tmp_path / Path(relpath).name, 7, edit)
    with pytest.raises(MalformedRecordError) as caught:
        load(path)
    assert (caught.value.file, caught.value.index, caught.value.field) == (path, 7, field)
    assert str(path) in str(caught.value) and "record 7" in str(caught.value) and f"'{field}'" in str(caught.value)


@pytest.mark.parametrize(("relpath", "load", "edit", "field", "problem"), [
    (ONE_HOP_CF, load_counterfact, lambda r: r["requested_rewrite"].update(subject=" "), "requested_rewrite.subject", "empty"),
    (ONE_HOP_CF, load_counterfact, lambda r: r["requested_rewrite"]["target_new"].update(str=""), "requested_rewrite.target_new.str",
     "empty"),
    ("zsre/knowedit_derived/ZsRE-test-all.json", load_knowedit_zsre, lambda r: r.update(target_new=""), "target_new", "empty"),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, lambda r: r["requested_rewrite"][0].update(subject=""),
     "requested_rewrite[0].subject", "empty"),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, lambda r: r["requested_rewrite"][0].update(prompt="no slot"),
     "requested_rewrite[0].prompt", "no '{}'"),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, lambda r: r["single_hops"].pop(), "single_hops",
     "3 hops, but orig.triples has 4"),
    ("mquake/derived/MQuAKE-hard.json", load_mquake, lambda r: r["orig"]["new_triples"].pop(), "new_single_hops",
     "4 hops, but orig.new_triples has 3"),
    (f"{PITFALLS}/GPT-J/composite_edit.json", lambda p: load_conflict_edit(p, kind="composite"),
     lambda r: r.update(prerequisites=[3]), "prerequisites[0]", "index 3 is outside the 3 triples"),
    (f"{PITFALLS}/GPT-J/composite_edit.json", lambda p: load_conflict_edit(p, kind="composite"),
     lambda r: r.update(prerequisites=[-1]), "prerequisites[0]", "index -1 is outside"),
])
def test_a_meaningless_record_names_file_index_and_field(relpath, load, edit, field, problem, data_mirror: Path, tmp_path: Path) -> None:
    """Well-typed values that no edit or metric can use: empty subjects or targets, no slot, disagreeing counts."""
    path = broken_copy(data_mirror / relpath, tmp_path / Path(relpath).name, 7, edit)
    with pytest.raises(MalformedRecordError) as caught:
        load(path)
    assert (caught.value.file, caught.value.index, caught.value.field) == (path, 7, field)
    assert problem in str(caught.value)


def test_broken_jsonl_and_tsv_records(data_mirror: Path, tmp_path: Path) -> None:
    lines = (data_mirror / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[3])
    record["answer"] = record["answer"].replace("#### ", "")
    lines[3] = json.dumps(record)
    gsm = tmp_path / "test.jsonl"
    gsm.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(MalformedRecordError, match="record 3: field 'answer'"):
        load_gsm8k(gsm)

    rows = (data_mirror / "sst2/dev.tsv").read_text(encoding="utf-8").splitlines()
    rows[5] = rows[5].rsplit("\t", 1)[0] + "\tpositive"
    sst2 = tmp_path / "dev.tsv"
    sst2.write_text("\r\n".join(rows), encoding="utf-8")
    with pytest.raises(MalformedRecordError, match="record 4: field 'label'"):
        load_sst2(sst2)


def test_piqa_labels_must_match_the_records(data_mirror: Path, tmp_path: Path) -> None:
    (tmp_path / "valid.jsonl").write_bytes((data_mirror / "piqa/valid.jsonl").read_bytes())
    labels = (data_mirror / "piqa/valid-labels.lst").read_text().splitlines()
    (tmp_path / "valid-labels.lst").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(InvalidFileError, match="valid-labels.lst: 1837 labels for 1838 records"):
        load_piqa(tmp_path)


# --- subsets --------------------------------------------------------------------------------------


def test_select_subset_is_seeded_order_stable_and_nested() -> None:
    records = list(range(1000))
    small, large = select_subset(records, 100, seed=3), select_subset(records, 300, seed=3)
    assert small == select_subset(records, 100, seed=3) and small != select_subset(records, 100, seed=4)
    assert small == sorted(small) and len(set(small)) == 100
    assert set(small) <= set(large)
    assert select_subset(records, None, seed=3) == records
    with pytest.raises(ValueError, match="1001"):
        select_subset(records, 1001, seed=3)


def test_filtered_subset_tests_only_what_it_needs_and_nests() -> None:
    records = list(range(1000))
    tested: list[int] = []

    def even(chunk: list[int]) -> list[bool]:
        tested.extend(chunk)
        return [r % 2 == 0 for r in chunk]

    small = select_subset_where(records, 10, 3, even, chunk=16)
    assert len(small) == 10 and small == sorted(small) and all(r % 2 == 0 for r in small)
    assert len(tested) <= 32  # ~half pass: two chunks of 16 give the 10
    large = select_subset_where(records, 200, 3, even, chunk=16)
    assert set(small) <= set(large) and small != select_subset_where(records, 10, 4, even)
    assert select_subset_where(records, None, 3, even) == list(range(0, 1000, 2))
    with pytest.raises(ValueError, match="only 500 of 1000 records pass"):
        select_subset_where(records, 501, 3, even)


def test_params_refuse_keys_the_dvc_run_cache_cannot_see(tmp_path: Path) -> None:
    """A param named `size` is left out of DVC's run-cache signature (treeverse/dvc#10296): refused."""
    load_params()  # the project's own params.yaml has none
    bad = tmp_path / "params.yaml"
    bad.write_text("suites:\n  counterfact:\n    size: 12\n    seed: 0\n")
    with pytest.raises(ValueError, match=r"suites\.counterfact\.size: DVC's run-cache ignores"):
        load_params(bad)
