"""DVC stage `params`: validate the whole of params.yaml, and that dvc.yaml's matrix lists agree
(`kepitfalls.stage_matrix`), then write each key's value to artifacts/params/<key>.json, the files the other
stages depend on (`kepitfalls.param_files`: one parse of params.yaml per `dvc status`)."""

from __future__ import annotations

import yaml

from kepitfalls import stage_matrix
from kepitfalls.param_files import write_key_files
from kepitfalls.params import PROJECT_ROOT, PARAMS_FILE, load_params

if __name__ == "__main__":
    load_params()
    raw = yaml.safe_load((PROJECT_ROOT / PARAMS_FILE).read_text(encoding="utf-8"))
    stage_matrix.check(raw)
    print(f"{len(write_key_files(raw, PROJECT_ROOT / 'artifacts' / 'params'))} key files")
