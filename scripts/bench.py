"""Benchmark: seconds per edit, per evaluated case, per scored sequence and per stage, against the recorded figures.

Also bytes per stored delta (in the JSON).

Run after `dvc repro` (it reads the materialised model, templates, statistics, suites, pre-scores and deltas):
    python scripts/bench.py [--cases 2] [--methods ROME] [--suites counterfact locality] [--record]
Edits are timed on the suite's first `--cases` cases (method.edit), evaluation on the same cases with their
stored deltas (the suite's `evaluate`), both in this process at the configured thread count. Each figure is
printed with its ratio to `bench/<model>.json` (the figures of an earlier commit; `--record` writes
this run's figures there). PYTHONPATH=<other checkout>/src times another commit's code against this one's
figures. A scored sequence is one teacher-forced (prompt, target) pair, one next-token
distribution or one greedy generation the protocol asks for; they are counted once, when the figures are
first recorded, so that later code, which may fold them into fewer passes, is timed on the same work.
Wall and CPU seconds are both given: on a shared machine CPU seconds move less with the load, but alternate
runs of the two commits anyway before reading ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import build_method, load_deltas, suite_cases
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model
from kepitfalls.scoring import primitives
from kepitfalls.scoring.router import installed
from kepitfalls.suites import suite_module
from kepitfalls.suites.common import Selection, load_pre, load_records

#: Ratios printed: wall seconds, and this process's CPU seconds (what a shared machine's load disturbs least).
RATIOS = ("s_per_edit", "cpu_s_per_edit", "s_per_case", "cpu_s_per_case", "s_per_sequence", "cpu_s_per_sequence")
#: This checkout (the figures are recorded beside the script, whichever checkout's package is imported).
ROOT = Path(__file__).resolve().parents[1]
COUNTED = {"teacher_forced": 2, "next_token_logprobs": 2, "greedy_generate": 2}  # name -> position of the prompts


@contextmanager
def counting(counts: dict[str, int]) -> Iterator[None]:
    """Count the prompts passed to the public scoring primitives, outermost calls only."""
    originals = {name: getattr(primitives, name) for name in COUNTED}
    depth = [0]

    def wrap(name: str, function: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                counts["sequences"] = counts.get("sequences", 0) + len(args[COUNTED[name]])
            depth[0] += 1
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
        return counted

    modules = [primitives] + [suite_module(s) for s in ("counterfact", "portability", "mquake", "conflict", "round", "locality")]
    patched = [(m, name) for m in modules for name in COUNTED if getattr(m, name, None) is originals[name]]
    try:
        for module, name in patched:
            setattr(module, name, wrap(name, originals[name]))
        yield
    finally:
        for module, name in patched:
            setattr(module, name, originals[name])


def measure(lm: Any, params: Any, method_name: str, suite: str, cases: int) -> dict[str, float]:
    """Edit and evaluate the suite's first `cases` records (edits on their own; evaluation on the stored deltas)."""
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
    counts: dict[str, int] = {}
    with counting(counts), installed(lm.model, method.router()):  # a memory-based method's router, as evaluate@ installs it
        started, cpu = time.perf_counter(), time.process_time()
        module.evaluate(lm, records, deltas, pre)
        evaluate_seconds, evaluate_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "edits": edits, "edit_stage_s": edit_seconds, "s_per_edit": edit_seconds / max(edits, 1),
        "cpu_s_per_edit": edit_cpu / max(edits, 1), "bytes_per_delta": sum(stored) / max(edits, 1),
        "cases": len(edited), "evaluate_stage_s": evaluate_seconds, "s_per_case": evaluate_seconds / len(edited),
        "cpu_s_per_case": evaluate_cpu / len(edited),
        "sequences": counts.get("sequences", 0),
    }


def commit() -> str:
    """The commit of the code being timed (the checkout the package was imported from)."""
    checkout = Path(primitives.__file__).resolve().parents[3]
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=["ROME"])
    parser.add_argument("--suites", nargs="*", default=["counterfact", "locality"])
    parser.add_argument("--record", action="store_true", help="write this run's figures as the new reference")
    parser.add_argument("--commit", help="the commit of the code timed, where its checkout is no git work tree")
    args = parser.parse_args()
    params = load_params()
    configure(params)
    lm = load_current_model(params)
    reference_file = ROOT / "bench" / f"{params.model}.json"
    reference = json.loads(reference_file.read_text(encoding="utf-8")) if reference_file.is_file() else {"cells": {}}
    cells: dict[str, dict[str, float]] = {}
    print(f"{'cell':20} {'s/edit':>7} {'cpu':>6} {'s/case':>7} {'cpu':>6} {'s/seq':>6} {'cpu':>6} {'edit s':>7} {'eval s':>7}   ratio (reference / now)")
    for method_name in args.methods:
        for suite in args.suites:
            cell = f"{method_name}-{suite}"
            now = measure(lm, params, method_name, suite, args.cases)
            before = reference["cells"].get(cell)
            if before and before["cases"] == now["cases"] and before["sequences"]:
                now["sequences"] = before["sequences"]  # the protocol's work, counted on the reference run
            now["s_per_sequence"] = now["evaluate_stage_s"] / max(now["sequences"], 1)
            now["cpu_s_per_sequence"] = now["cpu_s_per_case"] * now["cases"] / max(now["sequences"], 1)
            cells[cell] = now
            ratios = ""
            if before:
                ratios = "  ".join(f"{key} {before[key] / now[key]:.2f}x" for key in RATIOS if now[key] and before.get(key))
            print(f"{cell:20} {now['s_per_edit']:7.2f} {now['cpu_s_per_edit']:6.2f} {now['s_per_case']:7.2f} {now['cpu_s_per_case']:6.2f} "
                  f"{now['s_per_sequence']:6.3f} {now['cpu_s_per_sequence']:6.3f} {now['edit_stage_s']:7.1f} {now['evaluate_stage_s']:7.1f}"
                  f"   {ratios or '(no reference)'}")
    if args.record:
        write_json(reference_file, {"model": lm.identity, "commit": args.commit or commit(), "threads": __import__("torch").get_num_threads(), "cells": cells})
        print(f"recorded in {reference_file.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
