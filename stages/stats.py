"""DVC stage `stats`: second moments of the MLP output-projection inputs at every configured layer.

All layers come from one forward pass per corpus batch (stopped after the deepest), one file per layer.
Usage: python stages/stats.py
"""

from __future__ import annotations

import torch
from safetensors import safe_open

from kepitfalls import layout
from kepitfalls.methods.stats import save_stats, second_moments, stats_file
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model

if __name__ == "__main__":
    params = load_params()
    configure(params)
    settings, model_name = params["stats"], params["model"]
    lm = load_current_model(params)
    with safe_open(str(layout.corpus_file(model_name)), framework="pt") as handle:
        corpus_key = handle.metadata()
        tokens = handle.get_tensor("input_ids")
    modules = {int(layer): lm.arch.mlp_out.format(layer) for layer in settings["layers"]}
    moments, count = second_moments(lm, list(modules.values()), tokens, settings["batch_size"])
    stats_dir = layout.stats_dir(model_name)
    for layer, module in modules.items():
        key = {**corpus_key, "layer": str(layer), "module": module, "dtype": settings["dtype"]}
        save_stats(stats_file(stats_dir, layer), moments[module].to(getattr(torch, settings["dtype"])), count, key)
    print(f"layers {sorted(modules)}: {count} tokens each")
