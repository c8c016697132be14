"""Delta codecs: one per kind of change an editing method makes.

Every codec applies in place and reverts by restoring saved copies of exactly what it overwrote, never by
subtracting: floating-point `(w + d) - d` is not always `w`, and a pitfall metric must see the original
model bit for bit after a revert.

Precision: methods store their changes in float32 (low-rank factors, dense changes) whatever the model's
dtype, and a low-rank change U Vᵀ is multiplied out in float32. Applying adds the float32 change to the
weight in float32 arithmetic and rounds the sum once to the weight's own dtype (torch's in-place add
computes in the promoted dtype): W ← round(W + ΔW). Rounding ΔW to float16 first would round twice.
"""

from __future__ import annotations

import json
import os
import sys
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from kepitfalls.models.adapters import linear_weight

MEMORY_ATTRIBUTE = "kepitfalls_memory"
#: Where the method's router that reads the memory sits while installed (`scoring.router.installed`).
ROUTER_ATTRIBUTE = "kepitfalls_router"
#: The deltas applied to a model, most recent last: only the most recent may be reverted.
APPLIED_ATTRIBUTE = "kepitfalls_applied"


def _push_applied(model: nn.Module, delta: "Delta") -> None:
    stack = getattr(model, APPLIED_ATTRIBUTE, None)
    if stack is None:
        stack = []
        setattr(model, APPLIED_ATTRIBUTE, stack)
    stack.append(delta)


def _check_last_applied(model: nn.Module, delta: "Delta") -> None:
    """Reverting any delta but the most recent one would restore values a later delta has overwritten (or
    overwrite the later delta's change): the model would end up neither original nor edited."""
    stack = getattr(model, APPLIED_ATTRIBUTE, [])
    if not stack or stack[-1] is not delta:
        raise RuntimeError(
            f"{delta.kind} delta reverted out of order: revert the most recently applied delta first "
            f"({len(stack)} applied, this one {'not among them' if delta not in stack else 'is not the last'})"
        )


def _pop_applied(model: nn.Module, delta: "Delta") -> None:
    _check_last_applied(model, delta)
    getattr(model, APPLIED_ATTRIBUTE).pop()


class NoRouterError(RuntimeError):
    """A memory delta is applied, or scored, with no router installed to read it: its edit would silently be
    ignored and the numbers would be the unedited model's."""


def current_stage() -> str:
    """The DVC stage this process runs (DVC sets $DVC_STAGE), else its command line: for error messages."""
    return os.environ.get("DVC_STAGE") or " ".join(sys.argv) or "?"


def no_router_error(methods: list[str]) -> NoRouterError:
    return NoRouterError(
        f"memory deltas of {', '.join(methods)} are applied in stage {current_stage()!r} but no router is installed "
        f"to read them: the edit would be silently ignored (install the method's router: scoring.router.installed)"
    )


class Delta(ABC):
    """A stored change to a model; `apply` then `revert` leaves the model bit-identical."""

    kind: str

    def __init__(self) -> None:
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @abstractmethod
    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(view of the model tensor to change, the change to add to it), for every touched tensor."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON metadata that fully describe the delta (what the store writes)."""

    @property
    def applied(self) -> bool:
        return self._saved is not None

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Add the change in place, keeping copies of the overwritten values for `revert`."""
        if self.applied:
            raise RuntimeError(f"{self.kind} delta is already applied; revert it first")
        targets = self._targets(model)
        self._saved = [(view, view.clone()) for view, _ in targets]
        for view, change in targets:
            view.add_(change.to(device=view.device, dtype=torch.float32))  # one rounding to view.dtype
        _push_applied(model, self)

    @torch.no_grad()
    def revert(self, model: nn.Module) -> None:
        """Restore the saved original values (bit for bit); only the most recently applied delta may."""
        if self._saved is None:
            raise RuntimeError(f"{self.kind} delta is not applied")
        _pop_applied(model, self)
        for view, original in reversed(self._saved):
            view.copy_(original)
        self._saved = None

    def nbytes(self) -> int:
        """Bytes of tensor data this delta stores."""
        tensors, _ = self.state()
        return sum(t.numel() * t.element_size() for t in tensors.values())


class LowRankDelta(Delta):
    """ΔW = U Vᵀ per linear module, in (out, in) orientation: what ROME (rank 1) and MEMIT store."""

    kind = "low_rank"

    def __init__(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        for name, (u, v) in factors.items():
            if u.dim() != 2 or v.dim() != 2 or u.shape[1] != v.shape[1]:
                raise ValueError(f"{name}: factors must be (out, r) and (in, r), got {tuple(u.shape)}, {tuple(v.shape)}")
        self.factors = factors

    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        targets = []
        for name, (u, v) in self.factors.items():
            weight = linear_weight(model, name)
            targets.append((weight, u.to(weight.device, torch.float32) @ v.to(weight.device, torch.float32).T))
        return targets

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for name, (u, v) in self.factors.items():
            tensors[f"{name}::u"] = u.contiguous()
            tensors[f"{name}::v"] = v.contiguous()
        return tensors, {"modules": list(self.factors)}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "LowRankDelta":
        return cls({name: (tensors[f"{name}::u"], tensors[f"{name}::v"]) for name in meta["modules"]})


class DenseDelta(Delta):
    """Additive changes to named parameters, optionally restricted to some indices along one dimension.

    FT stores whole touched tensors (no index); KN stores only the neuron slices it changed.
    """

    kind = "dense"

    def __init__(self, changes: dict[str, torch.Tensor], indices: dict[str, tuple[int, torch.Tensor]] | None = None):
        super().__init__()
        self.changes = changes
        self.indices = indices or {}

    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        params = dict(model.named_parameters())
        targets = []
        for name, change in self.changes.items():
            if name not in params:
                raise KeyError(f"dense delta names parameter {name!r}, which the model lacks")
            param = params[name]
            if name in self.indices:
                dim, index = self.indices[name]
                targets.extend(_index_targets(param, dim, index, change))
            else:
                targets.append((param.data, change))
        return targets

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{name}::change": change.contiguous() for name, change in self.changes.items()}
        for name, (_, index) in self.indices.items():
            tensors[f"{name}::index"] = index.contiguous()
        dims = {name: dim for name, (dim, _) in self.indices.items()}
        return tensors, {"params": list(self.changes), "dims": dims}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "DenseDelta":
        changes = {name: tensors[f"{name}::change"] for name in meta["params"]}
        indices = {name: (dim, tensors[f"{name}::index"]) for name, dim in meta["dims"].items()}
        return cls(changes, indices)


def _index_targets(
    param: nn.Parameter, dim: int, index: torch.Tensor, change: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One writable view per selected slice (fancy indexing would copy), paired with its slice of the change."""
    return [(param.data.select(dim, int(i)), change.select(dim, k)) for k, i in enumerate(index.tolist())]


class MemoryDelta(Delta):
    """Entries added to an edit memory that a memory-based method (SERAC, IKE, GRACE) consults.

    The model's weights are untouched: `apply` pushes the entries onto the model's memory stack and
    `revert` pops them, so scoring code reads `model.kepitfalls_memory` and never special-cases a method.
    """

    kind = "memory"

    def __init__(self, method: str, entries: list[dict[str, Any]], tensors: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.method = method
        self.entries = entries
        self.tensors = tensors or {}

    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return []

    def apply(self, model: nn.Module) -> None:
        """Push the entries onto the memory; an error where no router is installed to read them."""
        if self.applied:
            raise RuntimeError("memory delta is already applied; revert it first")
        if getattr(model, ROUTER_ATTRIBUTE, None) is None:
            raise no_router_error([self.method])
        memory = getattr(model, MEMORY_ATTRIBUTE, None)
        if memory is None:
            memory = []
            setattr(model, MEMORY_ATTRIBUTE, memory)
        memory.append(self)
        _push_applied(model, self)
        self._saved = []

    def revert(self, model: nn.Module) -> None:
        memory = getattr(model, MEMORY_ATTRIBUTE, [])
        if not self.applied or not memory or memory[-1] is not self:
            raise RuntimeError("memory delta is not the most recently applied one")
        _pop_applied(model, self)
        memory.pop()
        self._saved = None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.tensors), {"method": self.method, "entries": json.loads(json.dumps(self.entries))}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "MemoryDelta":
        return cls(meta["method"], meta["entries"], tensors)
