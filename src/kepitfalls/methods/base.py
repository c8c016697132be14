"""The one interface every editing method implements (DESIGN.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Protocol

from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt

from kepitfalls.deltas.codecs import Delta
from kepitfalls.deltas.composed import ComposedDelta
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER, Section
from kepitfalls.scoring.router import Router


class PrepareSettings(Protocol):
    """What `prepare` reads of params.yaml beyond the method's own block; `config.Params` is one (declared
    here so that the methods need not import the schema that imports them)."""

    seed: int


class Hparams(Section):
    """A method's hyper-parameters for one model (`methods.<METHOD>.<model>`); each method extends it."""

    def stats_layers(self) -> list[int]:
        """Layers whose second-moment statistics an edit reads, so a missing one fails before a model loads."""
        return []


class ValueHparams(Hparams):
    """The v*/z* optimisation ROME and MEMIT share (`hidden/value.py`)."""

    v_num_grad_steps: PositiveInt
    v_lr: PositiveFloat
    v_loss_layer: Annotated[int, LAYER]
    v_weight_decay: NonNegativeFloat
    clamp_norm_factor: PositiveFloat
    kl_factor: NonNegativeFloat
    #: dtype of the optimisation's forward and backward passes (autocast); v₀, δ and the losses stay float32
    compute_dtype: Literal["float32", "bfloat16"]


@dataclass
class Artifacts:
    """Upstream artifacts a method may read: what its `prepare@<METHOD>` stage wrote (context templates,
    a trained editor, an embedded store) and the second-moment statistics."""

    templates_file: Path | None = None
    stats_dir: Path | None = None
    method_dir: Path | None = None

    @functools.cached_property
    def template_groups(self) -> list[list[str]]:
        """The stored template groups (the `templates@<METHOD>` stage: ["{}"] first, then one group per
        recipe entry), or just the bare prompt without that artifact."""
        if self.templates_file is None:
            return [["{}"]]
        return json.loads(self.templates_file.read_text(encoding="utf-8"))["groups"]

    def prepared(self, method: str, name: str) -> Path:
        """The file `name` that the method's `prepare@<METHOD>` stage wrote into its directory; where the
        directory or the file is missing, an error naming the stage to run."""
        path = None if self.method_dir is None else Path(self.method_dir) / name
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{method} has no prepared {name}{f' at {path}' if path else ''}: run `dvc repro prepare@{method}` first")
        return path

    @property
    def context_templates(self) -> list[str]:
        """Every template, the groups flattened in order ("{}" first)."""
        return [template for group in self.template_groups for template in group]


class EditMethod(ABC):
    """Computes a delta for one or more requests and leaves the model as it found it."""

    name: ClassVar[str]
    #: True where the method edits several requests in one step (MEMIT, FT); otherwise requests are
    #: applied one after another on the progressively edited model.
    batch_capable: ClassVar[bool] = False
    #: The schema of this method's `methods.<METHOD>.<model>` block.
    hparams_type: ClassVar[type[Hparams]]
    #: Modules besides its own (package-relative paths) that only this method's deltas depend on: part of its
    #: code fingerprint (`editing.code_fingerprint`), with the shared CORE_SOURCES.
    own_sources: ClassVar[tuple[str, ...]] = ()

    def __init__(self, hparams: Hparams, artifacts: Artifacts | None = None) -> None:
        self.hparams = hparams
        self.artifacts = artifacts or Artifacts()

    def upstream_files(self) -> list[Path]:
        """Artifacts this method's deltas depend on; their hashes enter every delta's content key."""
        return []

    def router(self) -> Router | None:
        """How this method's memory deltas reach scoring (`scoring.router`); None for weight edits."""
        return None

    def prepare(self, lm: LoadedModel, params: PrepareSettings, out_dir: Path) -> dict[str, float | int | str]:
        """Build what the method needs before its first edit (a trained editor, an embedded store) into
        `out_dir`, the `prepare@<METHOD>` stage's output, and return figures for its metrics file. Most
        methods need nothing beyond their context templates, which the stage writes itself."""
        return {}

    @abstractmethod
    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> Delta:
        """The delta for `requests` edited together (one request where the method is not batch-capable)."""

    def edit(self, lm: LoadedModel, requests: list[EditRequest]) -> Delta:
        """All requests at once where the method supports it, else sequentially on the edited model."""
        if not requests:
            raise ValueError("no edit requests")
        if self.batch_capable or len(requests) == 1:
            return self.edit_batch(lm, requests)
        parts: list[Delta] = []
        try:
            for request in requests:
                part = self.edit_batch(lm, [request])
                part.apply(lm.model)
                parts.append(part)
        finally:
            for part in reversed(parts):
                part.revert(lm.model)
        return ComposedDelta(parts)
