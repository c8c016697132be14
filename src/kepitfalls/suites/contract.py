"""What every suite module provides, declared once and checked when the module is loaded (`suite_module`).

A suite is a module, not a class: its names below are module-level. Stages never special-case a suite by
name; they read only these.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from kepitfalls.deltas.codecs import Delta
from kepitfalls.metrics.records import Evaluation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.suites.common import EditCase, PreScores, SuiteConfig


class Suite(Protocol):
    """One experimental setting: which records, which edits, which scores.

    The evaluation comes in three parts so that the evaluate stage can fan `score` out over worker
    processes: `items(records)` (the independent units, picklable), `score(lm, item, deltas, pre)` (one unit
    on its edited model, reverted after) and `summarise(lm, records, scores, pre)`; `evaluate` runs them in
    turn.
    """

    #: The schema of the suite's `suites.<suite>` block.
    Config: type[SuiteConfig]
    #: The type of one selected record, as `data/suites/<suite>.json` stores it; or, for a suite whose records
    #: share a suite-level part, its `common.Selection` (what `select` returns and the functions take).
    RECORD_TYPE: type
    #: One paragraph on what is measured and how, printed under the tables.
    PROTOCOL: str

    def select(self, lm: LoadedModel, raw_root: Path, config: Any) -> list[Any]:
        """The records of the suite's subset, from the raw benchmark files."""

    def edit_cases(self, records: list[Any]) -> list[EditCase]:
        """The edits the records ask for, each stored as one delta."""

    def pre_scores(self, lm: LoadedModel, records: list[Any]) -> PreScores:
        """The unedited model's scores, computed once for every method."""

    def items(self, records: list[Any]) -> list[Any]:
        """The independent units `score` takes."""

    def score(self, lm: LoadedModel, item: Any, deltas: Mapping[str, Delta], pre: PreScores) -> Any:
        """One unit on its edited model, the model reverted after."""

    def summarise(self, lm: LoadedModel, records: list[Any], scores: list[Any], pre: PreScores) -> Evaluation:
        """The suite's metrics and per-record rows from every unit's scores."""

    def evaluate(self, lm: LoadedModel, records: list[Any], deltas: Mapping[str, Delta], pre: PreScores) -> Evaluation:
        """`score` over `items`, then `summarise`."""


def _members() -> tuple[dict[str, Any], dict[str, inspect.Signature]]:
    attributes = dict(Suite.__annotations__)
    functions = {name: inspect.signature(value) for name, value in vars(Suite).items() if inspect.isfunction(value) and not name.startswith("_")}
    return attributes, functions


def check_suite(module: ModuleType) -> None:
    """Raise TypeError naming the module and every member of the contract it lacks or spells differently."""
    attributes, functions = _members()
    problems = [f"no {name}" for name in attributes if not hasattr(module, name)]
    if hasattr(module, "Config") and not (isinstance(module.Config, type) and issubclass(module.Config, SuiteConfig)):
        problems.append("Config is not a SuiteConfig")
    if hasattr(module, "RECORD_TYPE") and not isinstance(module.RECORD_TYPE, type):
        problems.append("RECORD_TYPE is not a type")
    if hasattr(module, "PROTOCOL") and not isinstance(module.PROTOCOL, str):
        problems.append("PROTOCOL is not text")
    for name, signature in functions.items():
        function = getattr(module, name, None)
        if not callable(function):
            problems.append(f"no function {name}")
            continue
        wanted = [p for p in signature.parameters if p != "self"]
        found = list(inspect.signature(function).parameters)
        if len(found) != len(wanted):  # the stages pass them by position
            problems.append(f"{name}({', '.join(found)}) instead of {name}({', '.join(wanted)})")
    if problems:
        raise TypeError(f"suite module {module.__name__} does not meet the suite contract (suites/contract.py): {'; '.join(problems)}")
