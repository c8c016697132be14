"""ROME (Meng et al. 2022): a rank-one update of one MLP output projection.

Follows the reference `rome/rome_main.py`, `compute_u.py` and `compute_v.py`:
- k: the input of the rewritten projection at the subject's last token, averaged over the context
  templates; u = C⁻¹k / ‖C⁻¹k‖ with C the uncentred second moment of those inputs (`mom2_adjustment`).
- v*: the MLP output at the subject's last token that makes the model say the new target
  (`hidden/value.py`, shared with MEMIT's z*).
- ΔW = (v* − W k₀) uᵀ / (uᵀ k₀), with k₀ the key of the bare prompt, so that (W + ΔW) k₀ = v*.
Whatever the weights' dtype, keys, C⁻¹k, v* and the factors are float32 (activations read from a
half-precision model are upcast); the delta codec adds U Vᵀ to the weight in its own dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import NonNegativeInt

from kepitfalls.deltas.codecs import LowRankDelta
from kepitfalls.hidden.hooks import capture, subject_reprs
from kepitfalls.hidden.value import optimise_output
from kepitfalls.methods.base import EditMethod, ValueHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.prepare.stats import load_second_moment, stats_file
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER
from kepitfalls.tokens import Batch, subject_last_index


def left_vector(lm: LoadedModel, layer: int, request: EditRequest, hparams: ROMEHparams, templates: list[str], stats_dir: Path | None) -> torch.Tensor:
    """u: the template-averaged key, whitened by C⁻¹ when `mom2_adjustment` is on, unit norm."""
    module = lm.arch.mlp_out.format(layer)
    prompts = [t.format(request.prompt) for t in templates]
    key = subject_reprs(lm, module, prompts, [request.subject] * len(prompts)).float().mean(0)
    if hparams.mom2_adjustment:
        if stats_dir is None:
            raise ValueError("ROME with mom2_adjustment needs second-moment statistics (the stats stage)")
        key = load_second_moment(stats_file(stats_dir, layer), inverse=True).to(key.device, torch.float32) @ key
    return key / key.norm()


class ROMEHparams(ValueHparams):
    """ROME's `methods.ROME.<model>` block (the reference's hparams/ROME/*.json)."""

    layer: Annotated[NonNegativeInt, LAYER]
    mom2_adjustment: bool

    def stats_layers(self) -> list[int]:
        return [self.layer] if self.mom2_adjustment else []


class ROME(EditMethod):
    """Rank-one model editing of `arch.mlp_out` at `hparams.layer`."""

    name = "ROME"
    hparams_type = ROMEHparams

    def upstream_files(self) -> list[Path]:
        files = [self.artifacts.templates_file] if self.artifacts.templates_file else []
        if self.hparams.mom2_adjustment and self.artifacts.stats_dir is not None:
            files.append(stats_file(self.artifacts.stats_dir, self.hparams.layer))
        return files

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> LowRankDelta:
        if len(requests) != 1:
            raise ValueError("ROME edits one request at a time; EditMethod.edit sequences several")
        request = requests[0]
        layer = self.hparams.layer
        templates = self.artifacts.context_templates
        module = lm.arch.mlp_out.format(layer)
        u = left_vector(lm, layer, request, self.hparams, templates, self.artifacts.stats_dir)
        v_star = optimise_output(lm, lm.arch.mlp.format(layer), layer, request, self.hparams, templates)
        ids, index = subject_last_index(lm.tokenizer, request.prompt, request.subject)
        batch = Batch.from_ids([ids], lm.tokenizer.pad_token_id, lm.model.device)
        key_rows, out_rows = capture(lm, module, batch, want_output=True)
        k0, w_k0 = key_rows[0, index].float(), out_rows[0, index].float()
        right = (v_star - w_k0) / torch.dot(k0, u)
        return LowRankDelta({module: (right[:, None], u[:, None])})
