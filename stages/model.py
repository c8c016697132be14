"""DVC stage `model`: materialise params `model` as safetensors (in `model_dtype`) + tokenizer under models/<name>/."""

from __future__ import annotations

from kepitfalls import layout
from kepitfalls.models.materialize import materialize
from kepitfalls.params import load_params
from kepitfalls.runtime import configure

if __name__ == "__main__":
    params = load_params()
    configure(params)
    print(materialize(params.model, layout.model_dir(params.model), params.model_dtype))
