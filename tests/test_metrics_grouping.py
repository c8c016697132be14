"""The shared split of scored records by column or kind."""

from __future__ import annotations

import pytest

from kepitfalls.metrics.grouping import group_by_label


def test_groups_follow_the_label_order_and_skip_empty_labels() -> None:
    items = [("b", 1), ("a", 2), ("b", 3)]
    groups = group_by_label(items, lambda item: item[0], ("a", "c", "b"), "toy")
    assert list(groups) == ["a", "b"]
    assert groups["b"] == [("b", 1), ("b", 3)]


def test_unknown_labels_and_empty_input_name_the_suite() -> None:
    with pytest.raises(ValueError, match=r"unknown toy labels \['z'\]; expected \('a', 'b'\)"):
        group_by_label([("z", 0)], lambda item: item[0], ("a", "b"), "toy")
    with pytest.raises(ValueError, match="no toy records to summarise"):
        group_by_label([], lambda item: item[0], ("a",), "toy")
