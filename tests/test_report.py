"""The report's tables: an unknown method name is an error, "not implemented" only marks the survey's unbuilt methods."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kepitfalls.methods import SUPPORTED
from kepitfalls.report.layout import TABLE3
from kepitfalls.report.tables import build


def test_an_unknown_method_in_report_methods_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"report\.methods: NOPE not implemented; implemented: .*ROME"):
        build(TABLE3, tmp_path, ["ROME", "NOPE"], set(SUPPORTED))


def test_not_implemented_marks_only_the_surveys_unbuilt_methods(tmp_path: Path) -> None:
    (tmp_path / "ROME").mkdir()
    (tmp_path / "ROME" / "portability.json").write_text(json.dumps({"SR": 50.0, "RR": 10.0, "OH": 5.0}))
    frame = build(TABLE3, tmp_path, ["ROME"], set(SUPPORTED))
    assert frame.loc["ROME", "SR"] == 50.0 and frame.loc["ROME", "MH"] == "mquake not run"
    assert frame.loc["MEND", "SR"] == "not implemented"
