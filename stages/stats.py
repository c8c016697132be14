"""DVC stage `stats`: second moments of the MLP output-projection inputs at every configured layer.

All layers come from one forward pass per corpus batch (stopped after the deepest), one file per layer; the
corpus's `stats.shards` runs of batches fan out over the stage's workers (`runtime.workers`).
Usage: python stages/stats.py
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from kepitfalls import layout
from kepitfalls.params import load_params
from kepitfalls.models.adapters import linear_weight
from kepitfalls.models.loading import LoadedModel
from kepitfalls.prepare.stats import RunSums, check_determined, save_stats, second_moments, spectrum, stats_file
from kepitfalls.runtime import configure, load_current_model, worker_model
from kepitfalls.tensorfile import load_tensors
from kepitfalls.workers import engine_name, map_cases, worker_count

if __name__ == "__main__":
    params = load_params()
    configure(params)
    settings, model_name = params.stats, params.model
    lm = load_current_model(params)
    corpus, corpus_key = load_tensors(layout.corpus_file(model_name))
    modules = {int(layer): lm.arch.mlp_out.format(layer) for layer in settings.layers}
    workers, engine = worker_count(params, lm), engine_name(params)

    def fan_out(run: Callable[[LoadedModel, tuple[int, int]], RunSums], spans: list[tuple[int, int]]) -> list[RunSums]:
        return map_cases(lm, partial(worker_model, params), run, spans, workers, "statistics", str, engine)

    check_determined(corpus["input_ids"].numel(), {name: linear_weight(lm.model, name).shape[1] for name in modules.values()})
    moments, count = second_moments(lm, list(modules.values()), corpus["input_ids"], settings.batch_size, settings.shards, fan_out)
    stats_dir = layout.stats_dir(model_name)
    for layer, module in modules.items():
        key = {**corpus_key, "layer": layer, "module": module, "dtype": settings.dtype, "shards": settings.shards}
        mom2 = moments[module].to(getattr(torch, settings.dtype))
        save_stats(stats_file(stats_dir, layer), mom2, count, key)
        shape = spectrum(mom2)
        print(f"layer {layer}: {count} tokens, smallest eigenvalue {shape['min_eigenvalue']:.3e}, "
              f"condition number {shape['condition_number']:.3e}")
