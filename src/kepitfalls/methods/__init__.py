"""Editing methods, one module per method named exactly as its `methods.<NAME>` key in params.yaml.

The module names match the params keys so that `dvc.yaml` can make each `edit@<METHOD>-<suite>` stage
depend on `src/kepitfalls/methods/<METHOD>.py` alone (DVC interpolation cannot change case).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names stay importable without torch (`kepitfalls --help` lists them)
    from kepitfalls.methods.base import EditMethod

#: Methods implemented here, by params key -> class name in the module of the same name.
SUPPORTED: dict[str, str] = {"ROME": "ROME", "MEMIT": "MEMIT", "FT": "FineTune", "KN": "KnowledgeNeurons", "GRACE": "GRACE"}


def method_class(name: str) -> type[EditMethod]:
    """The class implementing a method; a clear error for methods not (yet) implemented."""
    if name not in SUPPORTED:
        raise NotImplementedError(f"editing method {name!r} is not implemented; supported: {', '.join(SUPPORTED)}")
    return getattr(importlib.import_module(f"kepitfalls.methods.{name}"), SUPPORTED[name])
