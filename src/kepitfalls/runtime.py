"""Process set-up shared by the stages: threads, seeds and the loaded model."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from kepitfalls import layout
from kepitfalls.config import Params
from kepitfalls.models.loading import LoadedModel, load_model


def configure(params: Params) -> None:
    """Seed every generator from params and set torch's thread count.

    Threads come from $KEPITFALLS_THREADS or `runtime.threads`; they change speed, not the protocol, so they
    are not a stage parameter (results can differ in the last bits between thread counts).
    """
    threads = int(os.environ.get("KEPITFALLS_THREADS") or params.runtime.threads)
    torch.set_num_threads(threads)
    # Edited weights can drive activations into subnormal floats, which the CPU handles up to ~100x slower
    # (a KN edit sequence ran minutes instead of seconds); flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    seed = params.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_current_model(params: Params) -> LoadedModel:
    """The model named by `params.model`, as materialised by the `model` stage (in `model_dtype`)."""
    return load_model(layout.model_dir(params.model), device=params.runtime.device, model_dtype=params.model_dtype)


def worker_model(params: Params) -> LoadedModel:
    """A worker process's set-up: the stage's threads and seeds, then its own copy of the model."""
    configure(params)
    return load_current_model(params)
