"""DVC stage `stats`: second moments of the MLP output-projection inputs at every configured layer.

All layers come from one forward pass per corpus batch (stopped after the deepest), one file per layer.
Usage: python stages/stats.py
"""

from __future__ import annotations

import torch

from kepitfalls import layout
from kepitfalls.params import load_params
from kepitfalls.prepare.stats import save_stats, second_moments, spectrum, stats_file
from kepitfalls.runtime import configure, load_current_model
from kepitfalls.tensorfile import load_tensors

if __name__ == "__main__":
    params = load_params()
    configure(params)
    settings, model_name = params.stats, params.model
    lm = load_current_model(params)
    corpus, corpus_key = load_tensors(layout.corpus_file(model_name))
    modules = {int(layer): lm.arch.mlp_out.format(layer) for layer in settings.layers}
    moments, count = second_moments(lm, list(modules.values()), corpus["input_ids"], settings.batch_size)
    stats_dir = layout.stats_dir(model_name)
    for layer, module in modules.items():
        key = {**corpus_key, "layer": layer, "module": module, "dtype": settings.dtype}
        mom2 = moments[module].to(getattr(torch, settings.dtype))
        save_stats(stats_file(stats_dir, layer), mom2, count, key)
        shape = spectrum(mom2)
        print(f"layer {layer}: {count} tokens, smallest eigenvalue {shape['min_eigenvalue']:.3e}, "
              f"condition number {shape['condition_number']:.3e}")
