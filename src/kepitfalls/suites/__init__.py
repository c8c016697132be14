"""Suites: one experimental setting each (which records, which edits, which scores), one module each.

A suite module provides `select(lm, raw_root, config) -> records`, `edit_cases(records) -> [EditCase]`,
`pre_scores(lm, records)`, and its evaluation in three parts: `items(records)` (the independent units,
picklable), `score(lm, item, deltas, pre)` (one unit on its edited model, reverted after) and
`summarise(lm, records, scores, pre) -> Evaluation`; `evaluate(lm, records, deltas, pre)` runs them in
turn, and the evaluate stage fans `score` out over worker processes. Stages never special-case a suite by
name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SUPPORTED = ("counterfact", "portability", "mquake", "conflict", "round", "locality")


def suite_module(name: str) -> ModuleType:
    """The module implementing a suite, with a clear error for suites not (yet) implemented."""
    if name not in SUPPORTED:
        raise NotImplementedError(f"suite {name!r} is not implemented; supported: {', '.join(SUPPORTED)}")
    return importlib.import_module(f"kepitfalls.suites.{name}")
