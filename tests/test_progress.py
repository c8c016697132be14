"""Progress bars: every item through, on a terminal only."""

from __future__ import annotations

import io

import pytest

from kepitfalls.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_count_and_current_item_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    assert list(progress(["a", "b", "c"], "edit ROME on counterfact", str.upper)) == ["a", "b", "c"]
    shown = screen.getvalue()
    assert "edit ROME on counterfact" in shown and "3/3" in shown and "C" in shown


def test_progress_is_quiet_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert list(progress(iter(range(4)), "evaluate", str)) == [0, 1, 2, 3]
    assert log.getvalue() == ""
