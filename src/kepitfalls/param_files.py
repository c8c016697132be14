"""params.yaml as one small JSON file per key, for DVC: the `params` stage writes them (after validating the
whole file) and every other stage depends on the files of the keys it reads. DVC re-parses a params file once
per stage that declares keys from it, ~160 times per `dvc status` of the whole params.yaml; one file hash per
key costs a stat instead. params.yaml stays the only place values are set (`dvc exp run -S` included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kepitfalls.atomic import write_json

#: Keys get a file down to this depth: `methods.<METHOD>.<model>`, `data.benchmarks.<name>`, `suites.<suite>`.
DEPTH = 3


def key_values(raw: dict[str, Any], depth: int = DEPTH) -> dict[str, Any]:
    """Every dotted key path of `raw` down to `depth` levels, with its value (a mapping keeps its sub-keys)."""
    found = {}
    for key, value in raw.items():
        found[str(key)] = value
        if depth > 1 and isinstance(value, dict):
            found.update({f"{key}.{sub}": v for sub, v in key_values(value, depth - 1).items()})
    return found


def key_file(root: Path, key: str) -> Path:
    """Where a key's value lives for DVC: `<root>/<dotted key>.json`."""
    return root / f"{key}.json"


def write_key_files(raw: dict[str, Any], root: Path) -> list[Path]:
    """One JSON file per key path (sorted keys, so the same values give the same bytes)."""
    written = []
    for key, value in key_values(raw).items():
        path = key_file(root, key)
        write_json(path, value)
        written.append(path)
    return written
