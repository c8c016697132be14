"""The `foreach` lists of dvc.yaml must agree with each other: a matrix stage of one list depends on the outputs
of another list's stage for the same method, and DVC notices a missing producer only when the dependent stage
runs, after every stage before it in the run (the Figure-4 chain of a method left out of `report.methods`
failed after ~20 min of cells). The `params` stage checks it first, naming the keys."""

from __future__ import annotations

from typing import Any

from kepitfalls.params import ParamsError

#: (the list whose stages read another list's outputs, the list whose stages produce them, what is read)
NEEDS = [
    ("general.methods", "report.methods", "a method's chain@ reads its prepare@ outputs (templates, editor)"),
]


def _at(raw: dict[str, Any], key: str) -> list[str]:
    value: Any = raw
    for part in key.split("."):
        value = value[part]
    return list(value)


def check(raw: dict[str, Any]) -> None:
    """Raise ParamsError naming both keys when a matrix entry has no producer stage for what it reads."""
    for consumer, producer, why in NEEDS:
        missing = [m for m in _at(raw, consumer) if m not in _at(raw, producer)]
        if missing:
            raise ParamsError(
                f"{consumer} {missing} must also be in {producer}: {why}, stages dvc.yaml defines for "
                f"{producer} only (add them there, or drop them from {consumer})"
            )
