"""DVC stage `select@<suite>`: the suite's records (subset and known-fact filter from params).

Usage: python stages/select_records.py <suite>
"""

from __future__ import annotations

import sys

from kepitfalls import layout
from kepitfalls.data.download import verify_downloads
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model
from kepitfalls.suites import suite_module
from kepitfalls.suites.common import save_records

if __name__ == "__main__":
    suite = sys.argv[1]
    verify_downloads(layout.raw_root())  # `dvc repro -s` skips DVC's check of data/raw; a changed byte stops here
    params = load_params()
    configure(params)
    config = params.suite(suite)
    records = suite_module(suite).select(load_current_model(params), layout.raw_root(), config)
    save_records(layout.suite_records(suite), suite, records, {"model": params.model, **config.model_dump()})
    print(f"{suite}: {len(records)} records")
