"""A map over independent cases, run in this process or fanned out over spawned worker processes.

The edit and evaluate stages hand it one function and the cases; each worker loads the model once (the
`loader`) and receives the function once, then only the cases travel. Results come back in input order,
so the outputs do not depend on how many workers computed them. A case never depends on another case's
result (a sequential protocol is one case that chains its own edits), which is also what a fan-out over
Ray actors needs: the same `fn(lm, item)`, a loader per actor.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Sequence, TypeVar

from kepitfalls.config import Params
from kepitfalls.models.loading import LoadedModel
from kepitfalls.progress import progress

T = TypeVar("T")
R = TypeVar("R")

#: Builds the model in a fresh worker process (and sets its threads and seeds); must be picklable.
Loader = Callable[[], LoadedModel]
#: Computes one case on the worker's model; must be picklable (a module-level function or a partial of one).
CaseFn = Callable[[LoadedModel, T], R]

_worker: tuple[LoadedModel, CaseFn] | None = None
ENGINES = ("local", "ray")


def worker_count(params: Params, lm: LoadedModel) -> int:
    """$KEPITFALLS_WORKERS, else `runtime.workers`, else the CPUs this process may run on for a model on
    the CPU and one process for a model on an accelerator (each worker holds its own copy of the model).

    Like the thread count it changes speed, not results, so it is not a stage parameter.
    """
    configured = os.environ.get("KEPITFALLS_WORKERS") or params.runtime.workers
    if configured is None:
        if lm.model.device.type != "cpu":
            return 1
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = int(configured)
    if count < 1:
        raise ValueError(f"workers must be at least 1 ($KEPITFALLS_WORKERS or params runtime.workers), got {configured!r}")
    return count


def engine_name(params: Params) -> str:
    """$KEPITFALLS_ENGINE, else `runtime.engine`: `local` (processes on this machine) or `ray` (actors on a
    Ray cluster). Not a stage parameter: both give the same bytes."""
    engine = os.environ.get("KEPITFALLS_ENGINE") or params.runtime.engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)} ($KEPITFALLS_ENGINE or params runtime.engine), got {engine!r}")
    return engine


def _start(loader: Loader, fn: CaseFn) -> None:
    global _worker
    _worker = (loader(), fn)


def _run(item: T) -> R:
    assert _worker is not None, "worker used before its initializer ran"
    lm, fn = _worker
    return fn(lm, item)


def map_cases(
    lm: LoadedModel,
    loader: Loader | None,
    fn: CaseFn,
    items: Sequence[T],
    workers: int,
    desc: str,
    label: Callable[[T], str] | None = None,
    engine: str = "local",
) -> list[R]:
    """`[fn(lm, item) for item in items]`, in `workers` spawned processes (or Ray actors, with `engine` ray)
    when there is more than one to do.

    With one worker (or one item) everything runs here on `lm`; otherwise each worker builds its own
    model with `loader`, which must give the same weights as `lm` for the results to be identical.
    """
    count = min(workers, len(items))
    if count <= 1:
        return [fn(lm, item) for item in progress(items, desc, label)]
    if loader is None:
        raise ValueError(f"{desc}: {count} workers need a loader to build their model")
    if engine == "ray":
        from kepitfalls.ray_fanout import ray_map

        return ray_map(loader, fn, items, count, desc)
    context = multiprocessing.get_context("spawn")  # no fork: torch's thread pools do not survive it
    with context.Pool(count, initializer=_start, initargs=(loader, fn)) as pool:
        results = list(progress(pool.imap(_run, items, chunksize=1), desc))
        pool.close()  # let the workers exit on their own before the pool is torn down
        pool.join()
    return results
