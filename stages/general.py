"""DVC stage `general@<name>`: the Figure-4 raw outputs (generations, perplexities) of the unedited model
(name `unedited`) or of a method along its chain.

Usage: python stages/general.py unedited | <METHOD> <sequential|batch>
"""

from __future__ import annotations

import sys
import time
from functools import partial

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import build_method, delta_keys, load_deltas
from kepitfalls.general.chain import CHAIN, cases_for, chain_requests
from kepitfalls.general.config import UNEDITED
from kepitfalls.general.run import Probes, chain_run, unedited_run
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.workers import engine_name, worker_count

if __name__ == "__main__":
    name = sys.argv[1]
    params = load_params()
    config = params.general
    configure(params)
    lm = load_current_model(params)
    started = time.perf_counter()
    probes = Probes.build(lm, layout.raw_root(), config)
    if name == UNEDITED:
        run, timings = unedited_run(lm, probes, config)
        target, label = layout.general_unedited_file(), UNEDITED
    else:
        mode = sys.argv[2]
        cases = cases_for(mode, chain_requests(layout.raw_root(), config), config)
        method = build_method(params, name)
        deltas = load_deltas(layout.deltas_dir(name, CHAIN[mode]), delta_keys(lm, name, method, cases))
        run, timings = chain_run(lm, probes, config, mode, deltas, method.router(), workers=worker_count(params, lm),
                                 loader=partial(worker_model, params), engine=engine_name(params))
        target, label = layout.general_run_file(name, mode), f"{name}-{mode}"
    write_json(target, {"name": label, **run})
    timings["total_seconds"] = time.perf_counter() - started
    write_json(layout.general_timing_file(label), timings)
    print(f"{label}: {timings['total_seconds']:.1f} s in all; per checkpoint "
          f"{', '.join(f'{s:.1f}' for s in timings.get('checkpoint_seconds', []))} s; ME-PPL "
          f"{sum(timings.get('me_ppl_seconds', [0])) / max(1, len(timings.get('me_ppl_seconds', []))):.2f} s per edit")
