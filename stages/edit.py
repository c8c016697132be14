"""DVC stage `edit@<METHOD>-<suite>`: compute and store one delta per edit case of the suite.

Usage: python stages/edit.py <METHOD> <suite>
The output directory persists between runs: a delta whose content key is already stored is reused.
"""

from __future__ import annotations

import sys
from functools import partial

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.editing import edit_suite
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.workers import engine_name, worker_count

if __name__ == "__main__":
    method, suite = sys.argv[1], sys.argv[2]
    params = load_params()
    params.hparams(method)  # this cell's block exists for the model before the model loads
    configure(params)
    lm = load_current_model(params)
    summary = edit_suite(
        lm, params, method, suite, layout.deltas_dir(method, suite), workers=worker_count(params, lm),
        loader=partial(worker_model, params), engine=engine_name(params),
    )
    write_json(layout.edit_run_file(method, suite), summary)
    print(f"{method} on {suite}: {summary['computed']} computed, {summary['reused']} reused, "
          f"{summary['seconds_per_edit']:.2f} s per computed edit")
