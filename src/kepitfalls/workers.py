"""A map over independent cases, run in this process or fanned out over spawned worker processes.

The edit and evaluate stages hand it one function and the cases; each worker loads the model once (the
`loader`) and receives the function and the cases once, then only case indices and results travel. This
process is one of the workers: it starts on the cases at once while the others spawn and load (5-8 s for
SmolLM2), and every process claims the next unclaimed case from one shared counter, so a 2-case stage
gains from a second worker instead of waiting for it. Results come back in input order,
so the outputs do not depend on how many workers computed them. A case never depends on another case's
result (a sequential protocol is one case that chains its own edits), which is also what a fan-out over
Ray actors needs: the same `fn(lm, item)`, a loader per actor.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import traceback
from typing import Any, Callable, Iterator, Sequence, TypeVar

from kepitfalls.config import Params
from kepitfalls.models.loading import LoadedModel
from kepitfalls.progress import progress

T = TypeVar("T")
R = TypeVar("R")

#: Builds the model in a fresh worker process (and sets its threads and seeds); must be picklable.
Loader = Callable[[], LoadedModel]
#: Computes one case on the worker's model; must be picklable (a module-level function or a partial of one).
CaseFn = Callable[[LoadedModel, T], R]

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


def _claim(counter: Any, total: int) -> int | None:
    """The index of the next case nobody has taken yet, or None once all are taken."""
    with counter.get_lock():
        index = counter.value
        if index >= total:
            return None
        counter.value = index + 1
    return index


def _serve(loader: Loader, fn: CaseFn, items: Sequence[T], counter: Any, results: Any) -> None:
    """A spawned worker: build the model, then compute unclaimed cases until none is left.

    Each result travels as a plain pickle (bytes): the queue's own pickler sends a tensor as a file
    descriptor of its shared memory, which dies with this process, so a worker that had exited before the
    caller read its last result lost it (ConnectionResetError; the stats stage's 113 MB sums hit it).
    """
    try:
        lm = loader()
        while (index := _claim(counter, len(items))) is not None:
            results.put((index, pickle.dumps(fn(lm, items[index]), protocol=pickle.HIGHEST_PROTOCOL), None))
    except BaseException:  # reported to the parent, which raises it there
        results.put((None, None, traceback.format_exc()))


def _shared_map(lm: LoadedModel, loader: Loader, fn: CaseFn, items: Sequence[T], helpers: int, desc: str) -> list[R]:
    """`fn` over `items` in this process and `helpers` spawned ones, all claiming from one counter."""
    context = multiprocessing.get_context("spawn")  # no fork: torch's thread pools do not survive it
    counter, inbox = context.Value("q", 0), context.Queue()
    processes = [context.Process(target=_serve, args=(loader, fn, items, counter, inbox), daemon=True) for _ in range(helpers)]
    for process in processes:
        process.start()
    results: dict[int, R] = {}

    def finished() -> Iterator[int]:
        while (index := _claim(counter, len(items))) is not None:
            results[index] = fn(lm, items[index])
            yield index
        while len(results) < len(items):
            yield _receive(inbox, processes, results)

    try:
        for _ in progress(finished(), desc):
            pass
    finally:
        for process in processes:  # those still loading found nothing left to do
            if process.is_alive():
                process.terminate()
            process.join()
    return [results[index] for index in range(len(items))]


def _receive(inbox: Any, processes: list[Any], results: dict[int, Any]) -> int:
    """Store the next result a worker sends; a worker's error is raised here, a worker's death too."""
    while True:
        try:
            index, result, error = inbox.get(timeout=1.0)
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                raise RuntimeError(f"worker processes exited with {len(results)} results received") from None
            continue
        if error is not None:
            raise RuntimeError(f"a worker process failed:\n{error}")
        results[index] = pickle.loads(result)
        return index


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
    """`[fn(lm, item) for item in items]`, in this process and `workers` − 1 spawned ones (or `workers` Ray
    actors, with `engine` ray) when there is more than one to do.

    With one worker (or one item) everything runs here on `lm`; otherwise each spawned worker builds its own
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
    return _shared_map(lm, loader, fn, items, count - 1, desc)
