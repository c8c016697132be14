"""Safetensors files whose bytes depend only on what they hold.

safetensors writes its metadata map in a different key order in each process, so a file with several
metadata keys gets a new hash every time it is rewritten — and every content key built on that hash (ROME's
and MEMIT's deltas hash the statistics files) would change with it. Here a file carries exactly one
metadata entry, a sorted, compact JSON object, so identical inputs give identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from kepitfalls.atomic import atomic_path

META_KEY = "kepitfalls"


def canonical_json(payload: Any) -> str:
    """One spelling of a JSON value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write `tensors` (moved to the CPU, made contiguous) atomically, with `metadata` as one JSON entry."""
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(plain, str(tmp), metadata={META_KEY: canonical_json(metadata or {})})


def read_metadata(path: Path | str) -> dict[str, Any]:
    """The metadata written by `save_tensors` (an empty dict for a file written without it)."""
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def load_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a file written by `save_tensors`."""
    return load_file(str(path)), read_metadata(path)
