"""DVC stage `chain@<METHOD>` (and `chain-batch@<METHOD>`): the deltas of the method's Figure-4 edit chain.

Usage: python stages/chain.py <METHOD> <sequential|batch>
The delta of edit i is keyed by requests 1..i, and the output directory persists: growing the chain
computes only the new edits. A sequential chain is one group of dependent cases and runs in this process;
batch mode's checkpoints are independent cases and fan out over `runtime.workers` like a cell's.
"""

from __future__ import annotations

import sys
from functools import partial

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import build_method, store_deltas
from kepitfalls.general.chain import CHAIN, cases_for, chain_requests
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.workers import engine_name, worker_count

if __name__ == "__main__":
    method, mode = sys.argv[1], sys.argv[2]
    params = load_params()
    config = params.general
    cases = cases_for(mode, chain_requests(layout.raw_root(), config), config)
    configure(params)
    lm = load_current_model(params)
    fanout = dict(workers=worker_count(params, lm), loader=partial(worker_model, params), engine=engine_name(params))
    summary = store_deltas(lm, method, build_method(params, method), cases, layout.deltas_dir(method, CHAIN[mode]), {"suite": CHAIN[mode]}, **fanout)
    write_json(layout.edit_run_file(method, CHAIN[mode]), summary)
    print(f"{method} {mode} chain: {summary['computed']} computed, {summary['reused']} reused, "
          f"{summary['seconds_per_edit']:.2f} s per computed edit")
