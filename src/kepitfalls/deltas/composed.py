"""Deltas made of deltas (a method's sequential edits), and decoding any stored delta by its kind.

Apart from the single-kind codecs (`codecs.py`, `codebook.py`) because it must know every kind: the codecs
then need not import the codebook, nor the codebook the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kepitfalls.deltas.codebook import CodebookDelta
from kepitfalls.deltas.codecs import Delta, DenseDelta, LowRankDelta, MemoryDelta, _check_last_applied


class ComposedDelta(Delta):
    """Deltas applied one after another (sequential editing); reverted in the opposite order."""

    kind = "composed"

    def __init__(self, parts: list[Delta]) -> None:
        super().__init__()
        self.parts = parts

    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError("a composed delta applies its parts one by one")

    def apply(self, model: nn.Module) -> None:
        if self.applied:
            raise RuntimeError("composed delta is already applied; revert it first")
        done: list[Delta] = []
        try:
            for part in self.parts:
                part.apply(model)
                done.append(part)
        except BaseException:
            for part in reversed(done):  # leave the model as it was, not half-edited
                part.revert(model)
            raise
        self._saved = []

    def revert(self, model: nn.Module) -> None:
        if not self.applied:
            raise RuntimeError("composed delta is not applied")
        _check_last_applied(model, self.parts[-1])  # before any part is reverted
        for part in reversed(self.parts):
            part.revert(model)
        self._saved = None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        metas = []
        for position, part in enumerate(self.parts):
            part_tensors, part_meta = part.state()
            tensors.update({f"{position}/{name}": t for name, t in part_tensors.items()})
            metas.append({"kind": part.kind, "meta": part_meta})
        return tensors, {"parts": metas}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "ComposedDelta":
        parts = []
        for position, part in enumerate(meta["parts"]):
            prefix = f"{position}/"
            own = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
            parts.append(decode(part["kind"], own, part["meta"]))
        return cls(parts)


CODECS: dict[str, type[Delta]] = {c.kind: c for c in (LowRankDelta, DenseDelta, MemoryDelta, ComposedDelta, CodebookDelta)}


def decode(kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Delta:
    """Rebuild a delta from what `state()` returned."""
    if kind not in CODECS:
        raise ValueError(f"unknown delta kind {kind!r}; known: {sorted(CODECS)}")
    return CODECS[kind].from_state(tensors, meta)  # type: ignore[attr-defined]
