"""Benchmark: seconds per edit, per evaluated case, per scored sequence and per stage, against the recorded figures.

Also bytes per stored delta (in the JSON).

Run after `dvc repro` (it reads the materialised model, templates, statistics, suites, pre-scores and deltas):
    python scripts/bench.py [--cases N] [--methods ROME MEMIT FT KN] [--suites counterfact] [--record]
By default ROME, MEMIT, FT and KN on the CounterFact default subset (every selected record; about 3-4
minutes at one thread on an idle machine). Edits are timed on the suite's first `--cases` cases (all by
default; method.edit), evaluation on the same cases with their stored deltas (the suite's `evaluate`), both
in this process at the configured thread count. Each figure is printed with its ratio to `bench/<model>.json`
(the figures of an earlier commit; `--record` writes this run's figures there, every cell of the file kept
unless re-measured). PYTHONPATH=<other checkout>/src times another commit's code against this one's figures.
A scored sequence is one teacher-forced (prompt, target) pair, one next-token distribution or one greedy
generation (`kepitfalls.sequence_count`, every public scoring primitive); they are counted once, when the
figures are first recorded, so that later code, which may fold them into fewer passes, is timed on the same
work: a count that differs from the recorded one is printed. Wall and CPU seconds are both given: on a shared
machine CPU seconds move less with the load, but alternate runs of the two commits anyway before reading ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import build_method, load_deltas, suite_cases
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model
from kepitfalls.scoring import primitives
from kepitfalls.scoring.router import installed
from kepitfalls.suites import suite_module
from kepitfalls.sequence_count import counting
from kepitfalls.suites.common import Selection, load_pre, load_records

#: Ratios printed: wall seconds, and this process's CPU seconds (what a shared machine's load disturbs least).
RATIOS = ("s_per_edit", "cpu_s_per_edit", "s_per_case", "cpu_s_per_case", "s_per_sequence", "cpu_s_per_sequence")
#: This checkout (the figures are recorded beside the script, whichever checkout's package is imported).
ROOT = Path(__file__).resolve().parents[1]


def measure(lm: Any, params: Any, method_name: str, suite: str, cases: int | None) -> dict[str, Any]:
    """Edit and evaluate the suite's first `cases` records, all if None (edits on their own; evaluation on the
    stored deltas)."""
    module = suite_module(suite)
    every = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    if isinstance(every, Selection):  # its shared part (locality's PIQA subsample) stays whole
        edited = list(every.records[:cases])
        records = dataclasses.replace(every, records=tuple(edited))
    else:
        edited = records = every[:cases]
    method = build_method(params, method_name)
    edit_cases = list(suite_cases(suite, records).values())
    started, cpu = time.perf_counter(), time.process_time()
    stored = [method.edit(lm, list(case.requests)).nbytes() for case in edit_cases if case.base is None]
    edits = len(stored)
    edit_seconds, edit_cpu = time.perf_counter() - started, time.process_time() - cpu
    deltas, pre = load_deltas(layout.deltas_dir(method_name, suite)), load_pre(layout.pre_dir(suite))
    with counting() as counts, installed(lm.model, method.router()):  # a memory-based method's router, as cell@ installs it
        started, cpu = time.perf_counter(), time.process_time()
        module.evaluate(lm, records, deltas, pre)
        evaluate_seconds, evaluate_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "edits": edits, "edit_stage_s": edit_seconds, "s_per_edit": edit_seconds / max(edits, 1),
        "cpu_s_per_edit": edit_cpu / max(edits, 1), "bytes_per_delta": sum(stored) / max(edits, 1),
        "cases": len(edited), "evaluate_stage_s": evaluate_seconds, "s_per_case": evaluate_seconds / len(edited),
        "cpu_s_per_case": evaluate_cpu / len(edited),
        "sequences": sum(counts.values()), "sequences_by_primitive": dict(sorted(counts.items())),
    }


def per_sequence(now: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Set the seconds per sequence on the reference's count of the same cases (the protocol's work, which
    later code may fold into fewer calls); a note where this run counted differently, or other cases."""
    note = ""
    if before and before["cases"] != now["cases"]:
        note = f"  (reference: {before['cases']} cases)"
    elif before and before["sequences"]:
        if before["sequences"] != now["sequences"]:
            note = f"  (counted {now['sequences']} sequences, reference {before['sequences']}: its count used)"
        now["sequences"] = before["sequences"]
    now["s_per_sequence"] = now["evaluate_stage_s"] / max(now["sequences"], 1)
    now["cpu_s_per_sequence"] = now["cpu_s_per_case"] * now["cases"] / max(now["sequences"], 1)
    return note


def commit() -> str:
    """The commit of the code being timed (the checkout the package was imported from)."""
    checkout = Path(primitives.__file__).resolve().parents[3]
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, help="the suite's first N edited records (default: all of its subset)")
    parser.add_argument("--methods", nargs="*", default=["ROME", "MEMIT", "FT", "KN"])
    parser.add_argument("--suites", nargs="*", default=["counterfact"])
    parser.add_argument("--record", action="store_true", help="write this run's figures as the new reference")
    parser.add_argument("--commit", help="the commit of the code timed, where its checkout is no git work tree")
    args = parser.parse_args()
    params = load_params()
    configure(params)
    lm = load_current_model(params)
    reference_file = ROOT / "bench" / f"{params.model}.json"
    reference = json.loads(reference_file.read_text(encoding="utf-8")) if reference_file.is_file() else {"cells": {}}
    cells: dict[str, dict[str, Any]] = {}
    print(f"{'cell':20} {'s/edit':>7} {'cpu':>6} {'s/case':>7} {'cpu':>6} {'s/seq':>6} {'cpu':>6} {'seqs':>5} {'edit s':>7} {'eval s':>7}"
          "   ratio (reference / now)")
    for method_name in args.methods:
        for suite in args.suites:
            cell = f"{method_name}-{suite}"
            now = measure(lm, params, method_name, suite, args.cases)
            before = reference["cells"].get(cell)
            note = per_sequence(now, before)
            cells[cell] = now
            ratios = ""
            if before:  # no per-sequence ratio to a reference that counted no sequences (FT's, before score_prompts was counted)
                compared = [key for key in RATIOS if now[key] and before.get(key) and (before["sequences"] or "sequence" not in key)]
                ratios = "  ".join(f"{key} {before[key] / now[key]:.2f}x" for key in compared)
            print(f"{cell:20} {now['s_per_edit']:7.2f} {now['cpu_s_per_edit']:6.2f} {now['s_per_case']:7.2f} {now['cpu_s_per_case']:6.2f} "
                  f"{now['s_per_sequence']:6.3f} {now['cpu_s_per_sequence']:6.3f} {now['sequences']:5d} {now['edit_stage_s']:7.1f} "
                  f"{now['evaluate_stage_s']:7.1f}   {ratios or '(no reference)'}{note}", flush=True)
    if args.record:
        write_json(reference_file, {"model": lm.identity, "commit": args.commit or commit(), "threads": __import__("torch").get_num_threads(), "cells": cells})
        print(f"recorded in {reference_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
