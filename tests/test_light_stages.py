"""The stages that load no model start without torch or transformers (seconds per stage, ~30 such stages per
run), and the bookkeeping stages behind DVC's dependency lists (`params`, `code`) write what the stages need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kepitfalls.code_groups import GROUPS, digest
from kepitfalls.param_files import key_file, key_values, write_key_files
from kepitfalls.params import PROJECT_ROOT, ParamsError, load_sections
from kepitfalls.data.settings import Data

#: Stage scripts that read files and params only.
LIGHT = ["download.py", "general_score.py", "report.py", "code.py"]


@pytest.mark.parametrize("script", LIGHT)
def test_a_light_stage_imports_no_torch(script: str) -> None:
    """Everything the stage imports (its `__main__` block aside): no torch, no transformers."""
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('stage', {str(PROJECT_ROOT / 'stages' / script)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_every_key_dvc_yaml_reads_has_a_key_file(tmp_path: Path) -> None:
    """Each artifacts/params/<key>.json dvc.yaml names is written by the `params` stage, holding the key's value."""
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    written = {p.relative_to(tmp_path).as_posix() for p in write_key_files(raw, tmp_path)}
    model = raw["model"]
    assert f"methods.ROME.{model}.json" in written
    assert json.loads(key_file(tmp_path, f"methods.ROME.{model}").read_text()) == raw["methods"]["ROME"][model]
    named = {
        line.split("artifacts/params/")[1].split()[0]
        for line in (PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8").splitlines()
        if "artifacts/params/" in line and "- artifacts/params/" in line
    }
    interpolated = {"${key}": "counterfact", "${item}": "ROME", "${item.method}": "ROME", "${item.suite}": "counterfact", "${model}": model}
    for name in named:
        for var, value in interpolated.items():
            name = name.replace(var, value)
        assert name in written, name


def test_key_files_reach_three_levels_only() -> None:
    assert set(key_values({"a": {"b": {"c": {"d": 1}}}, "e": 2})) == {"a", "a.b", "a.b.c", "e"}


def test_every_code_group_exists_and_its_digest_follows_the_files(tmp_path: Path) -> None:
    for kind, names in GROUPS.items():
        assert len(digest(PROJECT_ROOT, names)) == 64, kind
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = digest(tmp_path, ["pkg"])
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert digest(tmp_path, ["pkg"]) == before  # bytecode is not code
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert digest(tmp_path, ["pkg"]) != before
    with pytest.raises(FileNotFoundError, match="pkg/b.py does not exist"):
        digest(tmp_path, ["pkg/b.py"])


def test_a_light_stage_still_validates_its_sections(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["data"]["mirorr"] = raw["data"].pop("mirror")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"(?s)params.yaml is not valid.*data\.mirror: missing key.*data\.mirorr: unknown key \(expected one of: mirror, benchmarks\)"):
        load_sections({"data": Data}, path)


def test_dvc_lock_holds_only_stages_dvc_yaml_defines() -> None:
    """DVC keeps a removed stage's lock entry and re-reads and rewrites the whole file after every stage it
    runs: 119 stale entries once made each stage ~1.5 s slower. Drop the entries when a stage goes."""
    from dvc.repo import Repo

    repo = Repo(str(PROJECT_ROOT))
    try:
        defined = {stage.addressing for stage in repo.index.stages}
    finally:
        repo.close()
    locked = set(yaml.load((PROJECT_ROOT / "dvc.lock").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)["stages"])
    assert sorted(locked - defined) == []
