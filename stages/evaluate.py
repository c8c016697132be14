"""DVC stage `evaluate@<METHOD>-<suite>`: the suite's metrics for the stored deltas, as a flat JSON.

Usage: python stages/evaluate.py <METHOD> <suite>
"""

from __future__ import annotations

import sys

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import evaluate_suite
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model

if __name__ == "__main__":
    method, suite = sys.argv[1], sys.argv[2]
    params = load_params()
    params.hparams(method)  # this cell's block exists for the model before the model loads
    configure(params)
    metrics = evaluate_suite(load_current_model(params), params, method, suite, layout.deltas_dir(method, suite))
    write_json(layout.metrics_file(method, suite), metrics)
    print(metrics)
