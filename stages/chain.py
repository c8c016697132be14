"""DVC stage `chain@<METHOD>` (and `chain-batch@<METHOD>`): the deltas of the method's Figure-4 edit chain.

Usage: python stages/chain.py <METHOD> <sequential|batch>
The delta of edit i is keyed by requests 1..i, and the output directory persists: growing the chain
computes only the new edits.
"""

from __future__ import annotations

import sys

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import build_method, store_deltas
from kepitfalls.general.chain import CHAIN, cases_for, chain_requests
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model

if __name__ == "__main__":
    method, mode = sys.argv[1], sys.argv[2]
    params = load_params()
    config = params.general
    cases = cases_for(mode, chain_requests(layout.raw_root(), config), config)
    configure(params)
    lm = load_current_model(params)
    summary = store_deltas(lm, method, build_method(params, method), cases, layout.deltas_dir(method, CHAIN[mode]), {"suite": CHAIN[mode]})
    write_json(layout.edit_run_file(method, CHAIN[mode]), summary)
    print(f"{method} {mode} chain: {summary['computed']} computed, {summary['reused']} reused, "
          f"{summary['seconds_per_edit']:.2f} s per computed edit")
