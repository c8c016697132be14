"""DVC stage `cell@<METHOD>-<suite>`: one table cell group — a delta per edit case of the suite, then the suite's
metrics for those deltas, in one process.

Usage: python stages/cell.py <METHOD> <suite>

Edit: the delta directory persists between runs, and a delta whose content key is already stored is reused,
so a change that re-runs the cell without touching the deltas' keys (metric code, the unedited scores)
recomputes no edit. Evaluate: the flat metrics JSON, the per-record scores behind them (JSON Lines) and
the protocol the report prints (so the report reads files only). One stage instead of an edit and an
evaluate stage saves DVC's per-stage bookkeeping and a model load per cell (~6 s each, 54 cells by default).
"""

from __future__ import annotations

import sys
from functools import partial

from kepitfalls import layout
from kepitfalls.atomic import write_json, write_jsonl
from kepitfalls.editing import edit_suite, evaluate_suite, protocol
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.workers import engine_name, worker_count

if __name__ == "__main__":
    method, suite = sys.argv[1], sys.argv[2]
    params = load_params()
    params.hparams(method)  # this cell's block exists for the model before the model loads
    configure(params)
    lm = load_current_model(params)
    fanout = dict(workers=worker_count(params, lm), loader=partial(worker_model, params), engine=engine_name(params))
    deltas_dir = layout.deltas_dir(method, suite)
    summary = edit_suite(lm, params, method, suite, deltas_dir, **fanout)
    write_json(layout.edit_run_file(method, suite), summary)
    print(f"{method} on {suite}: {summary['computed']} computed, {summary['reused']} reused, "
          f"{summary['seconds_per_edit']:.2f} s per computed edit")
    evaluation = evaluate_suite(lm, params, method, suite, deltas_dir, **fanout)
    write_json(layout.metrics_file(method, suite), evaluation.metrics)
    write_jsonl(layout.records_file(method, suite), evaluation.records)
    write_json(layout.protocol_file(method, suite), protocol(params, method, suite, evaluation))
    print(evaluation.metrics)
