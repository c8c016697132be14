"""scripts/result_set.py: a labelled result set names exactly the params its run changed, and copies its outputs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import yaml

from kepitfalls.params import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "result_set.py"
_spec = importlib.util.spec_from_file_location("result_set", SCRIPT)
result_set = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(result_set)  # type: ignore[union-attr]


def test_changed_params_lists_dotted_keys_with_their_new_values() -> None:
    old = {"general": {"edits": 3, "checkpoints": [0, 1, 3], "tasks": {"nq": {"subset_size": 8}}}, "seed": 0}
    new = {"general": {"edits": 40, "checkpoints": [0, 10, 40], "tasks": {"nq": {"subset_size": 8}}}, "seed": 0, "extra": 1}
    assert result_set.changed_params(old, new) == {"general.edits": 40, "general.checkpoints": [0, 10, 40], "extra": 1}
    assert result_set.changed_params(new, new) == {}


def test_result_set_copies_the_outputs_and_names_the_run(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "metrics").mkdir(parents=True)
    (workspace / ".runs" / "edit" / "ROME").mkdir(parents=True)
    (workspace / "params.yaml").write_text(yaml.safe_dump({"general": {"edits": 3}}))
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    subprocess.run(["git", "-C", str(workspace), "add", "params.yaml"], check=True)
    subprocess.run(["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], check=True)
    (workspace / "params.yaml").write_text(yaml.safe_dump({"general": {"edits": 40}}))
    (workspace / "metrics" / "ROME.json").write_text('{"a": 1}')
    (workspace / ".runs" / "edit" / "ROME" / "chain.json").write_text('{"seconds_per_edit": 1}')
    (workspace / ".runs" / "edit" / "ROME" / "counterfact.json").write_text("{}")
    into, name = tmp_path / "results", "chain40"
    target = into / name
    subprocess.run([sys.executable, str(SCRIPT), name, "--workspace", str(workspace), "--command", "dvc exp run -S x",
                    "--paths", "metrics", ".runs/edit/*/chain*.json", "--into", str(into)], check=True, capture_output=True)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest["params_changed"] == {"general.edits": 40}
    assert manifest["command"] == "dvc exp run -S x"
    assert json.loads((target / "metrics" / "ROME.json").read_text()) == {"a": 1}
    assert (target / "runs" / "edit" / "ROME" / "chain.json").is_file()
    assert not (target / "runs" / "edit" / "ROME" / "counterfact.json").exists()
    again = subprocess.run([sys.executable, str(SCRIPT), name, "--workspace", str(workspace), "--command", "c",
                            "--into", str(into)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr
