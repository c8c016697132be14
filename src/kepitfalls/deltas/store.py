"""A content-addressed store of deltas: the key says everything the delta was computed from.

The key hashes the model's identity, the method, its hyper-parameters, the edit request(s) and the hashes
of upstream artifacts (statistics, templates), so a stored delta is reused exactly when recomputing it
would give the same result, and never otherwise.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from kepitfalls.deltas.codecs import Delta
from kepitfalls.deltas.composed import decode
from kepitfalls.tensorfile import canonical_json, load_tensors, save_tensors

KEY_VERSION = 1


class CorruptDeltaError(RuntimeError):
    """A stored delta file cannot be read (empty or truncated, e.g. by a crash around its rename)."""


def delta_key(
    model_identity: str,
    method: str,
    hparams: dict[str, Any],
    requests: list[dict[str, Any]],
    upstream: dict[str, str] | None = None,
) -> str:
    """sha256 over a canonical JSON of everything that determines the delta."""
    payload = {
        "version": KEY_VERSION,
        "model": model_identity,
        "method": method,
        "hparams": hparams,
        "requests": requests,
        "upstream": upstream or {},
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class DeltaStore:
    """Deltas as safetensors files under `root/<key[:2]>/<key>.safetensors`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, delta: Delta) -> Path:
        """Write a delta atomically; a half-written file never carries the final name."""
        tensors, meta = delta.state()
        target = self.path(key)
        save_tensors(target, tensors, {"kind": delta.kind, "meta": meta})
        return target

    def get(self, key: str) -> Delta:
        """Load a stored delta (not applied)."""
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no delta {key} in {self.root}")
        try:
            tensors, header = load_tensors(path)
            return decode(header["kind"], tensors, header["meta"])
        except Exception as exc:  # safetensors and the codecs raise several types for a damaged file
            raise CorruptDeltaError(f"{path}: corrupt delta ({type(exc).__name__}: {exc}); re-run its edit stage") from exc

    def reuse(self, key: str) -> Delta | None:
        """The stored delta, or None where there is none to reuse: absent, or corrupt (named, then deleted)."""
        if not self.has(key):
            return None
        try:
            return self.get(key)
        except CorruptDeltaError as error:
            print(f"warning: {error}; recomputing it", file=sys.stderr)
            self.path(key).unlink()
            return None

    def keys(self) -> set[str]:
        """Keys of complete deltas; a writer's temporary file (hidden, killed mid-write) is not one."""
        return {p.stem for p in self.root.glob("*/*.safetensors") if not p.name.startswith(".")}

    def prune(self, keep: set[str]) -> int:
        """Delete stored deltas not in `keep`, and temporaries left by killed writers; returns how many deltas."""
        for leftover in self.root.glob("*/.*.tmp*"):
            leftover.unlink()
        removed = 0
        for key in self.keys() - keep:
            self.path(key).unlink()
            removed += 1
        return removed
