"""MEND (Mitchell et al. 2022a): a trained network turns the edit's gradient into the weight update.

Follows eric-mitchell/mend (`algs/mend.py`, `trainer.py`; EDITORS.md §2.1): the edited layers are the MLP
projections `modules` of the blocks `layers` (GPT-J's fc_in and fc_out of blocks 25-27, SmolLM2's gate, up
and down projections of blocks 27-29); the network is `mend/net.py`, its passes
`mend/edit.py`, its training `mend/train.py`, run by this method's `prepare` hook (the
`prepare@MEND` stage) on the zsRE training file `train_file`.

An edit takes the target NLL's gradient factors (x_t, δ_t) of every edited layer on the current weights
(so a chain of edits composes, each seeing the previous ones), maps them through the trained editor with
its statistics frozen and stores ΔW = edit_lr · Σ_t δ̃_t x̃_tᵀ exactly, as the low-rank factors
(edit_lr · δ̃ᵀ, x̃ᵀ) of rank T (the edited tokens), in float32. The reference adds the update
(`p + lr · ∇̃`, no descent sign): the editor learns the direction.

Several requests are edited jointly, as the reference's `MEND.edit` on a batch: the loss is the mean NLL
over the target tokens of all of them (one padded pass), its gradient per layer the sum of every token's
outer product δ_t x_tᵀ, each token's pair mapped by the editor, and the one delta Σ_t over the batch's
tokens (rank T = the batch's edited tokens).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from kepitfalls.data.zsre import load_zsre
from kepitfalls.deltas.codecs import LowRankDelta
from kepitfalls.mend import edit as mend_edit, net as mend_net, train as mend_train
from kepitfalls.mend.edit import Scored, Top, gradient_factors
from kepitfalls.mend.net import MendEditor, load_editor, save_editor
from kepitfalls.methods.base import EditMethod, Hparams, PrepareSettings
from kepitfalls.models.adapters import linear_weight
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER

EDITOR_FILE = "editor.safetensors"
#: Which projections of each edited block, by `Architecture` field.
ModuleRole = Literal["mlp_pre_act", "mlp_in", "mlp_out"]
#: The MEND-schema zsRE training files under data/raw/zsre: the mirrored 1k subset, or EasyEdit's 10,000
#: records (an optional file of the zsre benchmark: `data.benchmarks.zsre.include_optional`).
TRAIN_10K_FILE = "zsre_mend_train_10000.json"
TrainFile = Literal["zsre_mend_train-1k.json", "zsre_mend_train_10000.json"]


class MENDHparams(Hparams):
    """MEND's `methods.MEND.<model>` block: the edited layers, the network and its training.

    `train_steps` is the number of training edits (one record each); the reference trains up to 100,000
    (EasyEdit's GPT-J `max_iters`), the CPU default far fewer, on `train_file`. `val_records` held-out
    training records measure the editor.
    """

    layers: Annotated[list[NonNegativeInt], LAYER, Field(min_length=1)]
    modules: Annotated[list[ModuleRole], Field(min_length=1)]
    rank: PositiveInt
    n_hidden: NonNegativeInt
    edit_lr: float
    lr: PositiveFloat
    lr_lr: NonNegativeFloat
    cedit: NonNegativeFloat
    cloc: NonNegativeFloat
    accumulate_bs: PositiveInt
    grad_clip: PositiveFloat
    train_steps: NonNegativeInt
    val_records: PositiveInt
    train_file: TrainFile


def code_hash() -> str:
    """sha256 over this module and its helpers, recorded in the editor and checked before it edits: the
    delta keys' code fingerprint and the stages' dependencies name only a method's own module."""
    digest = hashlib.sha256()
    for module in (sys.modules[__name__], mend_net, mend_edit, mend_train):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def describe(hparams: MENDHparams) -> str:
    """One sentence on how long the editor trained, for table footnotes."""
    return f"MEND editor trained for {hparams.train_steps} edits on {hparams.train_file} (the reference: up to 100,000)"


class MEND(EditMethod):
    """Edits through the editor trained by `prepare`, read from the method's prepared directory."""

    name = "MEND"
    hparams_type = MENDHparams
    batch_capable = True  # several requests: one joint edit (the reference's batch)
    own_sources = ("mend/edit.py", "mend/net.py", "mend/train.py")
    #: False for the untrained control, whose network stays at its identity initialisation.
    trains: ClassVar[bool] = True

    def sites(self, lm: LoadedModel) -> list[str]:
        """The edited modules, block by block, each once (GPT-J's mlp_pre_act is its mlp_in)."""
        names = [getattr(lm.arch, role).format(layer) for layer in self.hparams.layers for role in self.hparams.modules]
        return list(dict.fromkeys(names))

    @property
    def editor_file(self) -> Path:
        """The trained editor `prepare` wrote."""
        return self.artifacts.prepared(self.name, EDITOR_FILE)

    def upstream_files(self) -> list[Path]:
        """The editor; it records the hash of the code that trained it and computes the deltas (`code_hash`)."""
        return [self.editor_file]

    def prepare(self, lm: LoadedModel, params: PrepareSettings, out_dir: Path) -> dict[str, float | int | str]:
        """Train the editor (or, for the control, only gather its statistics) and validate it."""
        from kepitfalls import layout  # here: layout reads params, whose schema imports every method

        hp = self.hparams
        modules = self.sites(lm)
        shapes = {m: tuple(reversed(linear_weight(lm.model, m).shape)) for m in modules}
        editor = MendEditor(shapes, hp.rank, hp.n_hidden, hp.edit_lr, seed=params.seed)
        settings = mend_train.Settings(hp.train_steps, hp.lr, hp.lr_lr, hp.cedit, hp.cloc, hp.accumulate_bs, hp.grad_clip, params.seed)
        records = load_zsre(training_file(layout.raw_root(), hp, f"methods.{self.name}.{params.model_key}"))
        train, val = mend_train.split(mend_train.examples(lm.tokenizer, records), hp.val_records, params.seed)
        start = min(hp.layers)
        metrics: dict[str, float | int | str] = {"train_records": len(train), "val_records": len(val), "trained": int(self.trains)}
        metrics.update(mend_train.fit(lm, editor, modules, start, train, settings, optimise=self.trains))
        metrics.update(mend_train.validate(lm, editor, modules, start, val))
        metrics["editor_parameters"] = sum(p.numel() for p in editor.parameters())
        out_dir.mkdir(parents=True, exist_ok=True)
        save_editor(out_dir / EDITOR_FILE, editor, hp.rank, hp.n_hidden, {"model": lm.identity, "trained": self.trains, "code": code_hash()})
        return metrics

    @functools.cached_property
    def editor(self) -> MendEditor:
        editor, metadata = load_editor(self.editor_file)
        if metadata.get("code") != code_hash():
            raise ValueError(f"{self.editor_file} was trained by other MEND code than this: run `dvc repro prepare@{self.name}` (-f where DVC sees no change)")
        return editor

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> LowRankDelta:
        """One delta for all `requests` (the joint edit), or for the one request."""
        modules = self.sites(lm)
        if list(self.editor.shapes) != modules:
            raise ValueError(f"{self.editor_file} edits {list(self.editor.shapes)}, the hyper-parameters name {modules}: re-run prepare@{self.name}")
        scored = [Scored.of(lm.tokenizer, request.rewrite_prompt, request.target_new) for request in requests]
        top = Top(lm, [s.ids for s in scored], min(self.hparams.layers))
        factors = gradient_factors(lm, top, range(len(scored)), scored, modules)
        with torch.no_grad():
            updates = self.editor.updates(factors)
        return LowRankDelta({name: (u.contiguous(), v.contiguous()) for name, (u, v) in updates.items()})


def training_file(raw_root: Path, hparams: MENDHparams, where: str) -> Path:
    """The chosen training file under data/raw/zsre (`where`: the params block, for the error); the optional
    10,000-record file is there only once downloaded."""
    path = raw_root / "zsre" / hparams.train_file
    if not path.is_file():
        hint = (" (an optional file of the zsre benchmark: set data.benchmarks.zsre.include_optional=true and run download@zsre)"
                if hparams.train_file == TRAIN_10K_FILE else "")
        raise ValueError(f"{where}.train_file: {path} is missing{hint}")
    return path
