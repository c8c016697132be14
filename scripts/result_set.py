"""Keep a non-default run's outputs as a labelled result set: results/<name>/, beside the default results.

The default run's metrics, plots and reports live where `dvc repro` writes them, and a run at other sizes (a
`dvc exp run -S ...`, a GPU machine) overwrites them. This copies the chosen outputs of such a run's workspace
into results/<name>/, with MANIFEST.json saying what produced them: the commit, the params that differ from
that commit's params.yaml, the machine, and the command as the caller gives it.

    python scripts/result_set.py <name> --workspace <run's checkout> --command "dvc exp run -S ..." \
        [--paths metrics/general plots/general reports/figure4.md ...] [--note "what it is"]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Figure 4's outputs: its metrics, tidy rows, rendered figure and findings, and the stages' timings (globs).
FIGURE4 = ["metrics/general", "plots/general", "reports/figure4.md", "reports/figure4.png", "reports/figure4.svg",
           ".runs/general", ".runs/edit/*/chain*.json"]


def changed_params(old: Any, new: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys whose value differs between two params trees, with the new value (None where removed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: dict[str, Any] = {}
        for key in sorted(set(old) | set(new), key=str):
            found.update(changed_params(old.get(key), new.get(key), f"{prefix}{key}."))
        return found
    return {} if old == new else {prefix.rstrip("."): new}


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.machine()


def _git(workspace: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(workspace), *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--paths", nargs="+", default=FIGURE4)
    parser.add_argument("--note", default="")
    parser.add_argument("--into", type=Path, default=ROOT / "results", help="where result sets live")
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    target = args.into.resolve() / args.name
    if target.exists():
        raise SystemExit(f"{target} exists: pick another name or remove it first")
    commit = _git(workspace, "rev-parse", "HEAD").strip()
    committed = yaml.safe_load(_git(workspace, "show", f"{commit}:params.yaml"))
    used = yaml.safe_load((workspace / "params.yaml").read_text(encoding="utf-8"))
    for pattern in args.paths:
        sources = sorted(workspace.glob(pattern))
        if not sources:
            raise SystemExit(f"{workspace / pattern}: nothing there; did the run produce it?")
        for source in sources:
            # .runs/ keeps the timings; in the result set they are visible as runs/
            destination = target / source.relative_to(workspace).as_posix().removeprefix(".")
            destination.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, destination)
    manifest = {
        "name": args.name,
        "note": args.note,
        "command": args.command,
        "commit": commit,
        "params_changed": changed_params(committed, used),
        "machine": {"system": platform.platform(), "cpu": _cpu_model(), "cpus": len(os.sched_getaffinity(0))},
        "paths": args.paths,
    }
    (target / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{target}: {len(args.paths)} paths, {len(manifest['params_changed'])} params changed")


if __name__ == "__main__":
    main()
