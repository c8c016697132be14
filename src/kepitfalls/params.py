"""Reading `params.yaml`: the single source of every seed, subset size and hyper-parameter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = "params.yaml"
#: Keys DVC's run-cache leaves out of a stage's signature at any depth (treeverse/dvc#10296, unfixed in
#: DVC 3.67): changing such a param would silently restore the previous run's outputs.
RUN_CACHE_BLIND_KEYS = ("size", "nfiles")


def load_params(path: Path | str | None = None) -> dict[str, Any]:
    """Load the project's params.yaml (or another file with the same layout), refusing run-cache-blind keys."""
    path = Path(path) if path is not None else PROJECT_ROOT / PARAMS_FILE
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    blind = _blind_keys(params)
    if blind:
        raise ValueError(
            f"{path}: {', '.join(blind)}: DVC's run-cache ignores params named {' or '.join(RUN_CACHE_BLIND_KEYS)} "
            "(treeverse/dvc#10296), so changing one would silently check out the old outputs; rename it "
            "(subset sizes are `subset_size`)"
        )
    return params


def _blind_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key named in RUN_CACHE_BLIND_KEYS."""
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key in RUN_CACHE_BLIND_KEYS:
            found.append(path)
        found.extend(_blind_keys(value, path + "."))
    return found


def mirror_dir(params: dict[str, Any]) -> Path | None:
    """The local benchmark mirror: $KEPITFALLS_MIRROR, else `data.mirror` (relative to the project root).

    A mirror is laid out like `../shared/benchmarks`; files it holds are taken from it (and still checked
    against their sha256), files it lacks are downloaded from their public URL.
    """
    raw = os.environ.get("KEPITFALLS_MIRROR") or (params.get("data") or {}).get("mirror") or ""
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return path if path.is_dir() else None
