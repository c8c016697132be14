"""The `kepitfalls` command: help and version answer without torch or transformers; one edit, before and after."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fixtures_models import single_thread  # noqa: F401  (autouse: one torch thread)
from kepitfalls import __version__, layout
from kepitfalls.atomic import write_json
from kepitfalls.cli import main
from kepitfalls.models.materialize import materialize
from kepitfalls.params import PROJECT_ROOT

HEAVY = ("torch", "transformers", "pydantic")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["edit", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    probe = (
        "import sys\nfrom kepitfalls.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    assert result.stdout.strip().endswith("[]"), result.stdout
    assert seconds < 1.5, f"{argv} took {seconds:.2f} s"
    if argv == ["--version"]:
        assert __version__ in result.stdout


def _tiny_project(tmp_path: Path) -> Path:
    """A project root (pure NLL descent: ROME's direction shows on random weights) with tiny-llama materialised, ROME's bare-prompt templates, and a params file for it."""
    materialize("tiny-llama", tmp_path / "models" / "tiny-llama")
    write_json(tmp_path / "artifacts" / "methods" / "tiny-llama" / "ROME" / "templates.json", {"groups": [["{}"]]})
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["model"] = "tiny-llama"
    raw["stats"]["layers"] = [1]
    raw["report"]["methods"] = ["ROME"]
    raw["general"]["methods"] = ["ROME"]
    raw["methods"]["ROME"]["tiny-llama"] = {
        **raw["methods"]["ROME"]["smollm2-135m"], "layer": 1, "v_lr": 0.05, "kl_factor": 0.0, "v_weight_decay": 0.0, "mom2_adjustment": False,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return tmp_path


EDIT = ["edit", "--method", "ROME", "--prompt", "{} is located in the city of", "--subject", "The Eiffel Tower",
        "--target", "Rome", "--true", "Paris", "--neighbour", "The Colosseum is in"]


def test_edit_shows_before_and_after_on_a_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tiny_project(tmp_path)
    monkeypatch.setattr(layout, "PROJECT_ROOT", root)
    runner = CliRunner()
    result = runner.invoke(main, [*EDIT, "--params", str(root / "params.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    before, after = summary["before"]["readouts"], summary["after"]["readouts"]
    assert [r["kind"] for r in before] == ["prompt", "neighbour"]
    assert after[0]["p_new"] > before[0]["p_new"] * 1.01  # a random tiny model: the direction, not the size
    assert summary["request"] == {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower",
                                  "target_new": "Rome", "target_true": "Paris"}
    assert summary["model"] == "tiny-llama"

    text = runner.invoke(main, [*EDIT, "--params", str(root / "params.yaml")])
    assert text.exit_code == 0, text.output
    assert "P(Rome) before → after" in text.output and "neighbour" in text.output


def test_edit_refuses_a_request_no_method_can_make(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*EDIT[:4], "{} is in", "--subject", " ", "--target", "Rome"])
    assert result.exit_code == 2
    assert "subject ' ' is empty" in result.output


def test_edit_names_what_is_missing_and_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tiny_project(tmp_path)
    (root / "artifacts" / "methods" / "tiny-llama" / "ROME" / "templates.json").unlink()
    monkeypatch.setattr(layout, "PROJECT_ROOT", root)
    result = CliRunner().invoke(main, [*EDIT, "--params", str(root / "params.yaml")])
    assert isinstance(result.exception, FileNotFoundError)
    assert "templates.json" in str(result.exception) and "dvc repro model prepare@ROME" in str(result.exception)
