"""The shared code each kind of pipeline stage runs on, as one digest per kind for DVC.

A `cell@`/`general@`/... stage used to list ~25 shared source files one by one, 4,500 hash checks per
`dvc status` over the whole matrix. The `code` stage hashes each kind's list once into
artifacts/code/<kind>.sha256 and the stages depend on that one file (plus their own method, suite and metric
modules, which stay in dvc.yaml so that editing one re-runs only its cells). A path here that does not exist
stops the `code` stage, naming it: a moved module must be moved here too."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The stages' shared core (paths from the project root; a directory stands for every file under it).
_EDITING = [
    "src/kepitfalls/atomic.py", "src/kepitfalls/tensorfile.py", "src/kepitfalls/params.py", "src/kepitfalls/config.py",
    "src/kepitfalls/schema.py", "src/kepitfalls/layout.py", "src/kepitfalls/runtime.py", "src/kepitfalls/models",
    "src/kepitfalls/scoring", "src/kepitfalls/deltas", "src/kepitfalls/data/records.py", "src/kepitfalls/suites/common.py",
    "src/kepitfalls/editing.py", "src/kepitfalls/methods/__init__.py", "src/kepitfalls/methods/base.py",
    "src/kepitfalls/hidden", "src/kepitfalls/tokens.py", "src/kepitfalls/requests.py", "src/kepitfalls/prepare/stats.py",
]
_CHAIN = ["src/kepitfalls/general/config.py", "src/kepitfalls/general/chain.py", "src/kepitfalls/data/portability.py"]
_GENERAL_TASKS = [
    "src/kepitfalls/general/run.py", "src/kepitfalls/general/names.py", "src/kepitfalls/general/generation.py",
    "src/kepitfalls/general/generated.py", "src/kepitfalls/general/perplexity.py", "src/kepitfalls/general/tasks",
    "src/kepitfalls/data/me_ppl.py",
    "src/kepitfalls/data/wikitext.py", "src/kepitfalls/data/nq.py", "src/kepitfalls/data/sst2.py",
    "src/kepitfalls/data/gsm8k.py", "src/kepitfalls/data/samsum.py",
]
_FANOUT = ["src/kepitfalls/suites/__init__.py", "src/kepitfalls/workers.py", "src/kepitfalls/ray_fanout.py"]

#: Stage kind -> the files its digest covers.
GROUPS: dict[str, list[str]] = {
    # MEND's editor (MEND and MEND_untrained) is built by MEND's code, which every prepare@ lists: a matrix stage
    # cannot vary its deps per method (the other methods' outputs do not change); SERAC's fine-tuned
    # counterfactual model is trained on the scoring's tokenisation (tokens.py)
    "prepare": [
        "stages/prepare.py", "src/kepitfalls/prepare/templates.py", "src/kepitfalls/methods/base.py",
        "src/kepitfalls/methods/MEND.py", "src/kepitfalls/mend", "src/kepitfalls/tokens.py",
    ],
    "pre": [
        "stages/pre.py", "src/kepitfalls/suites/common.py", "src/kepitfalls/scoring", "src/kepitfalls/models",
        "src/kepitfalls/editing.py", "src/kepitfalls/tensorfile.py",
    ],
    # a cell edits, then scores its deltas; IKE embeds each edit's query (SERAC: its memory keys)
    "cell": ["stages/cell.py", "src/kepitfalls/metrics/records.py", *_EDITING, *_FANOUT, "src/kepitfalls/encoder.py"],
    "chain": ["stages/chain.py", *_EDITING, "src/kepitfalls/workers.py", "src/kepitfalls/ray_fanout.py", *_CHAIN],  # batch mode fans out
    "general": ["stages/general.py", *_EDITING, *_FANOUT, *_CHAIN, *_GENERAL_TASKS],  # its points fan out (general/run.py)
}


def _files(root: Path, name: str) -> list[Path]:
    """The file itself, or every file under a directory (bytecode caches aside), in a fixed order."""
    path = root / name
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"kepitfalls.code_groups: {name} does not exist (moved? update GROUPS)")
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(root).parts)


def digest(root: Path, names: list[str]) -> str:
    """sha256 over the relative path and the bytes of every file, so a rename changes it as an edit does."""
    sha = hashlib.sha256()
    for path in (p for name in names for p in _files(root, name)):
        sha.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()
