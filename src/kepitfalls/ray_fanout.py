"""The map of `workers.map_cases` over Ray actors: one model load per actor, results in input order.

With `runtime.engine: ray` (or $KEPITFALLS_ENGINE=ray) the edit and evaluate stages hand their cases to
actors instead of local processes; the results gathered are the same objects in the same order, so the
outputs are byte-identical to `local` (tested against a two-node cluster on 127.0.0.1).

- Cluster: the one at $RAY_ADDRESS, else a local one started for the stage with one CPU per actor and
  shut down after it.
- Placement: one CPU per actor and the stage's torch threads; one GPU per actor where the cluster has GPUs.
- Code and files: the project's package travels to the actors (`py_modules`), and
  $KEPITFALLS_PROJECT_ROOT points them at this checkout, so every node must see the project directory at
  the same path (one machine, or a shared filesystem; otherwise a DVC-pulled checkout at the same path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from kepitfalls.params import PROJECT_ROOT
from kepitfalls.progress import progress

PACKAGE_DIR = Path(__file__).resolve().parent


class CaseActor:
    """Holds one model (built by the loader, once) and runs the case function on it."""

    def __init__(self, loader: Callable[[], Any], fn: Callable[[Any, Any], Any]) -> None:
        self.lm, self.fn = loader(), fn

    def run(self, item: Any) -> Any:
        return self.fn(self.lm, item)


def _connect(actors: int) -> None:
    import ray

    address = os.environ.get("RAY_ADDRESS") or None
    runtime_env = {
        "py_modules": [str(PACKAGE_DIR)],
        "env_vars": {
            "KEPITFALLS_PROJECT_ROOT": str(PROJECT_ROOT),
            **{name: os.environ[name] for name in ("KEPITFALLS_THREADS",) if name in os.environ},
        },
    }
    local = {} if address else {"num_cpus": actors}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env, **local)


def ray_map(loader: Callable[[], Any], fn: Callable[[Any, Any], Any], items: Sequence[Any], actors: int, desc: str) -> list[Any]:
    """`[fn(lm, item) for item in items]` over `actors` Ray actors, each with its own `loader()` model."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise RuntimeError("runtime.engine ray needs Ray: pip install 'kepitfalls[ray]'") from None
    connected_here = not ray.is_initialized()
    if connected_here:
        _connect(actors)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        actor_class = ray.remote(num_cpus=1, num_gpus=gpus)(CaseActor)
        pool = ActorPool([actor_class.remote(loader, fn) for _ in range(actors)])
        return list(progress(pool.map(lambda actor, item: actor.run.remote(item), items), desc))
    finally:
        if connected_here:
            ray.shutdown()
