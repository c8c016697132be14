"""A codebook adaptor on one layer (GRACE, Hartvigsen et al. 2023) and the delta kind that builds it.

The codebook holds entries (key, value, deferral radius ε, label). A forward hook on the wrapped module
reads the module's input at every position; where the nearest key is within that key's ε, the module's
output at that position is replaced by the key's value (`replace_last` of the reference, applied to every
position on its own, so that a teacher-forced pass gives what generation token by token gives).

A `CodebookDelta` records exactly what one edit did to the codebook: the entry it added (if any), the ε it
changed on older entries (split on a conflict, expansion on a matching label) and the value it retrained
(a matching label adds no entry). `apply` installs the adaptor with the first entry and checks that every
older entry is in the state the delta was computed on; `revert` restores ε and values, removes the entry
and uninstalls the adaptor with the last one, so the model is left with no hook and no attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from kepitfalls.deltas.codecs import Delta, _pop_applied, _push_applied
from kepitfalls.models.adapters import get_module
from kepitfalls.scoring.diagnostics import install, installed, uninstall

COMPONENT_PREFIX = "codebook:"


@dataclass
class Entry:
    """One codebook entry; `key` and `value` are float32 vectors, `label` the target's token ids."""

    key: torch.Tensor
    value: torch.Tensor
    eps: float
    label: tuple[int, ...]


class Codebook:
    """The adaptor: entries and the forward hook on `module` that consults them."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.entries: list[Entry] = []
        self._handle: Any = None

    @staticmethod
    def of(model: nn.Module, module: str) -> "Codebook | None":
        """The codebook installed on `module`, if any."""
        return installed(model).get(COMPONENT_PREFIX + module)

    def install(self, model: nn.Module) -> None:
        install(model, COMPONENT_PREFIX + self.module, self)
        self._handle = get_module(model, self.module).register_forward_hook(self._hook)

    def uninstall(self, model: nn.Module) -> None:
        self._handle.remove()
        self._handle = None
        uninstall(model, COMPONENT_PREFIX + self.module)

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Euclidean distance (float32) from each row of `queries` (…, d) to its nearest key, and that key's index.

        Computed without the matrix-product shortcut, so a query equal to a key is at distance exactly 0.
        """
        keys = torch.stack([e.key.to(queries.device) for e in self.entries])
        flat = queries.reshape(-1, queries.shape[-1]).float()
        dist = torch.cdist(flat, keys, compute_mode="donot_use_mm_for_euclid_dist")
        smallest, index = dist.min(dim=1)
        return smallest.reshape(queries.shape[:-1]), index.reshape(queries.shape[:-1])

    def _hook(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not self.entries:
            return output
        dist, index = self.nearest(args[0])
        eps = torch.tensor([e.eps for e in self.entries], dtype=torch.float32, device=dist.device)[index]
        values = torch.stack([e.value.to(output.device) for e in self.entries])[index].to(output.dtype)
        return torch.where((dist <= eps)[..., None], values, output)

    @torch.no_grad()
    def diagnostics(self, lm: Any, prompts: Sequence[str]) -> dict[str, list[float]]:
        """Per prompt: the distance from the module's input at its last token to the nearest key, and
        whether the codebook fires there (100) or not (0)."""
        from kepitfalls.hidden.hooks import capture
        from kepitfalls.tokens import Batch, prompt_ids

        sequences = [prompt_ids(lm.tokenizer, p) for p in prompts]
        inputs, _ = capture(lm, self.module, Batch.from_ids(sequences, lm.tokenizer.pad_token_id, lm.model.device))
        last = torch.stack([inputs[row, len(seq) - 1] for row, seq in enumerate(sequences)])
        dist, index = self.nearest(last)
        hits = [100.0 if float(d) <= self.entries[int(i)].eps else 0.0 for d, i in zip(dist, index)]
        return {"codebook_distance": dist.tolist(), "codebook_hit": hits}


class CodebookDelta(Delta):
    """One edit's change to the codebook on `module`: an added entry, ε changes, a retrained value."""

    kind = "codebook"

    def __init__(
        self,
        module: str,
        entry: Entry | None,
        eps_changes: Sequence[tuple[int, float, float]] = (),
        value_changes: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.entry = entry
        self.eps_changes = [(int(i), float(before), float(after)) for i, before, after in eps_changes]
        self.value_changes = dict(value_changes or {})
        self._book: Codebook | None = None
        self._added: Entry | None = None

    def _targets(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError("a codebook delta changes the codebook, not weights")

    def _check(self, book: Codebook) -> None:
        """Every older entry this delta changes exists and is as it was when the delta was computed."""
        for index, before, _ in self.eps_changes:
            if index >= len(book.entries) or book.entries[index].eps != before:
                raise RuntimeError(f"codebook on {self.module}: entry {index} is not in the state this delta was computed on (ε)")
        for index, (before, _) in self.value_changes.items():
            if index >= len(book.entries) or not torch.equal(book.entries[index].value.detach().cpu(), before.cpu()):
                raise RuntimeError(f"codebook on {self.module}: entry {index} is not in the state this delta was computed on (value)")

    def apply(self, model: nn.Module) -> None:
        if self.applied:
            raise RuntimeError("codebook delta is already applied; revert it first")
        book = Codebook.of(model, self.module)
        if book is None:
            if self.entry is None or self.eps_changes or self.value_changes:
                raise RuntimeError(f"codebook delta changes entries of a codebook on {self.module} that is not installed")
            book = Codebook(self.module)
            book.install(model)
        self._check(book)
        for index, _, after in self.eps_changes:
            book.entries[index].eps = after
        for index, (_, after) in self.value_changes.items():
            book.entries[index].value = after
        if self.entry is not None:
            self._added = Entry(self.entry.key, self.entry.value, self.entry.eps, self.entry.label)
            book.entries.append(self._added)
        self._book = book
        _push_applied(model, self)
        self._saved = []

    def revert(self, model: nn.Module) -> None:
        book = self._book
        if not self.applied or book is None or Codebook.of(model, self.module) is not book:
            raise RuntimeError("codebook delta is not applied to this model")
        _pop_applied(model, self)  # only the most recently applied delta, before anything changes
        if self._added is not None:
            book.entries.pop()
        for index, (before, _) in self.value_changes.items():
            book.entries[index].value = before
        for index, before, _ in reversed(self.eps_changes):
            book.entries[index].eps = before
        if not book.entries:
            book.uninstall(model)
        self._book = self._added = None
        self._saved = None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"module": self.module, "eps_changes": [list(c) for c in self.eps_changes]}
        if self.entry is not None:
            tensors["key"] = self.entry.key.contiguous()
            tensors["value"] = self.entry.value.contiguous()
            meta["entry"] = {"eps": self.entry.eps, "label": list(self.entry.label)}
        for index, (before, after) in self.value_changes.items():
            tensors[f"value_before/{index}"] = before.contiguous()
            tensors[f"value_after/{index}"] = after.contiguous()
        meta["value_changes"] = sorted(self.value_changes)
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "CodebookDelta":
        entry = None
        if "entry" in meta:
            entry = Entry(tensors["key"], tensors["value"], float(meta["entry"]["eps"]), tuple(meta["entry"]["label"]))
        changes = {i: (tensors[f"value_before/{i}"], tensors[f"value_after/{i}"]) for i in meta["value_changes"]}
        return cls(meta["module"], entry, [tuple(c) for c in meta["eps_changes"]], changes)
