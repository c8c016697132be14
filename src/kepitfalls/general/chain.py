"""The Figure-4 edit chain: the ZsRE requests in file order, and the edit cases whose deltas make it.

Sequential mode: case i holds request i and has case i-1 as its base, so its delta is computed on the model
carrying edits 1..i-1 and its content key covers requests 1..i (`editing.delta_keys`). Checkpoint n is the
first n cases of the one chain, and growing the chain computes only the new edits. Batch mode: one case per
checkpoint holding its first n requests, edited at once.
"""

from __future__ import annotations

from pathlib import Path

from kepitfalls.data.portability import load_portability
from kepitfalls.general.config import General, Mode
from kepitfalls.requests import EditRequest
from kepitfalls.suites.common import EditCase, check_cases

#: The suite name the chain's deltas are stored under (`layout.deltas_dir(method, CHAIN[mode])`).
CHAIN: dict[Mode, str] = {"sequential": "chain", "batch": "chain-batch"}


def chain_requests(raw_root: Path, config: General) -> list[EditRequest]:
    """Requests `start` .. `start + edits - 1` of the ZsRE file (MEND schema: src about subject, to alt)."""
    records = load_portability(raw_root / config.file, "zsre", "one_hop")
    end = config.start + config.edits
    if end > len(records):
        raise ValueError(f"general.start {config.start} + general.edits {config.edits} is past the {len(records)} records of {config.file}")
    return [record.request for record in records[config.start : end]]


def case_id(position: int) -> str:
    """The id of the chain's `position`-th edit (1-based)."""
    return f"edit-{position:04d}"


def sequential_cases(requests: list[EditRequest]) -> dict[str, EditCase]:
    """One case per request, each based on the one before."""
    cases = {}
    for position, request in enumerate(requests, start=1):
        cases[case_id(position)] = EditCase(case_id(position), (request,), case_id(position - 1) if position > 1 else None)
    check_cases("general", cases.values())
    return cases


def batch_cases(requests: list[EditRequest], checkpoints: list[int]) -> dict[str, EditCase]:
    """One case per edited checkpoint n: its first n requests, edited together on the unedited model."""
    cases = {f"batch-{n:04d}": EditCase(f"batch-{n:04d}", tuple(requests[:n])) for n in checkpoints if n > 0}
    check_cases("general", cases.values())
    return cases


def cases_for(mode: Mode, requests: list[EditRequest], config: General) -> dict[str, EditCase]:
    return sequential_cases(requests) if mode == "sequential" else batch_cases(requests, config.checkpoints)


def checkpoint_cases(mode: Mode, n: int) -> list[str]:
    """The case ids whose deltas, applied in order, give the model after n edits."""
    if n == 0:
        return []
    return [case_id(i) for i in range(1, n + 1)] if mode == "sequential" else [f"batch-{n:04d}"]
