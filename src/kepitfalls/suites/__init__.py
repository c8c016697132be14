"""Suites: one experimental setting each (which records, which edits, which scores), one module each.

What a suite module provides is declared in `suites/contract.py` (`Suite`) and checked when it is loaded.
Stages never special-case a suite by name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SUPPORTED = ("counterfact", "portability", "mquake", "conflict", "round", "locality")


def suite_module(name: str) -> ModuleType:
    """The module implementing a suite, checked against the suite contract; a clear error for suites not
    (yet) implemented."""
    if name not in SUPPORTED:
        raise NotImplementedError(f"suite {name!r} is not implemented; supported: {', '.join(SUPPORTED)}")
    from kepitfalls.suites.contract import check_suite

    module = importlib.import_module(f"kepitfalls.suites.{name}")
    check_suite(module)
    return module
