"""DVC stage `evaluate@<METHOD>-<suite>`: the suite's metrics for the stored deltas, as a flat JSON, with the
per-record scores behind them (JSON Lines) and the protocol the report prints (so the report reads files only).

Usage: python stages/evaluate.py <METHOD> <suite>
"""

from __future__ import annotations

import sys
from functools import partial

from kepitfalls import layout
from kepitfalls.atomic import write_json, write_jsonl
from kepitfalls.editing import evaluate_suite, protocol
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.workers import engine_name, worker_count

if __name__ == "__main__":
    method, suite = sys.argv[1], sys.argv[2]
    params = load_params()
    params.hparams(method)  # this cell's block exists for the model before the model loads
    configure(params)
    lm = load_current_model(params)
    evaluation = evaluate_suite(
        lm, params, method, suite, layout.deltas_dir(method, suite), workers=worker_count(params, lm),
        loader=partial(worker_model, params), engine=engine_name(params),
    )
    write_json(layout.metrics_file(method, suite), evaluation.metrics)
    write_jsonl(layout.records_file(method, suite), evaluation.records)
    write_json(layout.protocol_file(method, suite), protocol(params, method, suite, evaluation))
    print(evaluation.metrics)
