"""Splitting a suite's scored records by the column or kind they feed, with one check of the labels."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")


def group_by_label(items: Sequence[Item], label: Callable[[Item], str], labels: Sequence[str], suite: str) -> dict[str, list[Item]]:
    """`items` grouped by `label(item)`, in the order of `labels`, leaving out labels with no items.

    An empty input or a label outside `labels` is an error naming the `suite`: a summary that silently
    dropped a column would look like a method that scored nothing there.
    """
    if not items:
        raise ValueError(f"no {suite} records to summarise")
    unknown = {label(item) for item in items} - set(labels)
    if unknown:
        raise ValueError(f"unknown {suite} labels {sorted(unknown)}; expected {tuple(labels)}")
    groups = {name: [item for item in items if label(item) == name] for name in labels}
    return {name: group for name, group in groups.items() if group}
