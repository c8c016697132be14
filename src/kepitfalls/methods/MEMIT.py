"""MEMIT (Meng et al. 2023): many facts written jointly into the MLP output projections of several layers.

Follows the reference `memit/memit_main.py` (`execute_memit`), `compute_z.py` and `compute_ks.py`:

1. z*: for every request, the residual stream at the output of the LAST edited block, at the subject's last
   token, plus δ, with δ optimised (Adam, `v_lr`, `v_num_grad_steps`) so that every context-templated prompt
   predicts the new target (mean NLL per prompt), plus `kl_factor`·KL keeping the prediction of
   "{subject} is a" at the subject's last token stable (as the reference: the KL is read at the lookup
   token, not at the prompt's end), plus weight decay `v_weight_decay`·‖δ‖/‖z₀‖², with ‖δ‖ projected onto
   `clamp_norm_factor`·‖z₀‖ (z₀ the residual of the bare prompt) and an early stop once the loss < 0.05.
   δ is added at the lookup token of every prompt, the KL prompt included.
2. Then, for the edited layers in ascending order, with the updates of the earlier layers already applied:
   - K (in × n): the rewritten projection's input at the subject's last token, averaged per template group
     and then over the groups (`compute_ks`: the reference's templates are [["{}"], 5 samples]);
   - R (out × n): z* − z, with z the current last-layer residual of the bare prompt; spread over the
     remaining layers: R_l = R / (len(layers) − i);
   - ΔW_l = R_l Kᵀ (λC + K Kᵀ)⁻¹, solved in float64, λ = `mom2_update_weight`, C the uncentred second
     moment from the stats stage (the identity when `mom2_adjustment` is false);
   - stored as U = R_l (out × n), V = (λC + KKᵀ)⁻¹K (in × n), so ΔW_l = U Vᵀ has rank n.
   Each layer's update is applied (as the LowRankDelta that is returned will apply it, so the stored delta
   reproduces the computation exactly) before the next layer's keys are read; all are reverted at the end,
   bit for bit.

Choices the reference leaves open, or where this implementation differs:
- Template groups: MEMIT's own recipe ("{}" + one 10-token sample from each of five prompts,
  `prepare/templates.py`), stored as the reference's nested list; keys average within each group, then
  over the groups.
- z* is optimised by `hidden/value.py` (shared with ROME's v*; see its docstring for the speed-ups).
- Everything is computed in float32 (the solve in float64) whatever the weights' dtype: keys and residuals
  read from a half-precision model are upcast, and the factors are stored in float32 (V holds small numbers:
  λ is large); the codec rounds W + U Vᵀ to the weights' dtype once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Sequence

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, field_validator

from kepitfalls.deltas.codecs import LowRankDelta
from kepitfalls.hidden.hooks import subject_reprs
from kepitfalls.hidden.value import optimise_output
from kepitfalls.methods.base import EditMethod, ValueHparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.prepare.stats import load_second_moment, stats_file
from kepitfalls.requests import EditRequest
from kepitfalls.schema import LAYER


def request_keys(lm: LoadedModel, module: str, requests: Sequence[EditRequest], groups: list[list[str]]) -> torch.Tensor:
    """K (in × n): per request, the module input at the subject's last token, averaged within each template
    group and then over the groups (the reference `compute_ks`)."""
    columns = []
    for request in requests:
        prompts = [t.format(request.prompt) for group in groups for t in group]
        rows = subject_reprs(lm, module, prompts, [request.subject] * len(prompts)).float()
        means, start = [], 0
        for group in groups:
            means.append(rows[start : start + len(group)].mean(0))
            start += len(group)
        columns.append(torch.stack(means).mean(0))
    return torch.stack(columns, dim=1)


def layer_update(keys: torch.Tensor, residuals: torch.Tensor, mom2: torch.Tensor | None, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) with U Vᵀ = R Kᵀ (λC + K Kᵀ)⁻¹: U = R, V = (λC + K Kᵀ)⁻¹ K, solved in float64.

    `mom2=None` stands for the identity (MEMIT without `mom2_adjustment`).
    """
    k = keys.double()
    c = torch.eye(k.shape[0], dtype=torch.float64, device=k.device) if mom2 is None else mom2.to(k.device, torch.float64)
    adjusted = torch.linalg.solve(weight * c + k @ k.T, k)
    return residuals.float(), adjusted.float()


class MEMITHparams(ValueHparams):
    """MEMIT's `methods.MEMIT.<model>` block (the reference's hparams/MEMIT/*.json)."""

    layers: Annotated[list[NonNegativeInt], LAYER, Field(min_length=1)]
    mom2_adjustment: bool
    mom2_update_weight: PositiveFloat

    @field_validator("layers")
    @classmethod
    def _ascending(cls, layers: list[int]) -> list[int]:
        if layers != sorted(set(layers)):
            raise ValueError(f"MEMIT layers must be distinct and ascending, got {layers}")
        return layers

    def stats_layers(self) -> list[int]:
        return list(self.layers) if self.mom2_adjustment else []


class MEMIT(EditMethod):
    """Mass-editing memory in a transformer: `arch.mlp_out` at `hparams.layers`, all requests jointly."""

    name = "MEMIT"
    batch_capable = True
    hparams_type = MEMITHparams

    def upstream_files(self) -> list[Path]:
        files = [self.artifacts.templates_file] if self.artifacts.templates_file else []
        if self.hparams.mom2_adjustment and self.artifacts.stats_dir is not None:
            files.extend(stats_file(self.artifacts.stats_dir, layer) for layer in self.hparams.layers)
        return files

    def _mom2(self, layer: int) -> torch.Tensor | None:
        if not self.hparams.mom2_adjustment:
            return None
        if self.artifacts.stats_dir is None:
            raise ValueError("MEMIT with mom2_adjustment needs second-moment statistics (the stats stage)")
        return load_second_moment(stats_file(self.artifacts.stats_dir, layer))

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> LowRankDelta:
        if not requests:
            raise ValueError("no edit requests")
        layers = self.hparams.layers
        templates = self.artifacts.context_templates
        groups = self.artifacts.template_groups
        z_layer = layers[-1]
        z_module = lm.arch.layer.format(z_layer)
        targets = torch.stack([optimise_output(lm, z_module, z_layer, r, self.hparams, templates) for r in requests], dim=1)

        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        applied: list[LowRankDelta] = []
        try:
            for i, layer in enumerate(layers):
                module = lm.arch.mlp_out.format(layer)
                keys = request_keys(lm, module, requests, groups)
                current = subject_reprs(lm, z_module, [r.prompt for r in requests], [r.subject for r in requests], output=True).T
                residuals = (targets - current.float()) / (len(layers) - i)
                u, v = layer_update(keys, residuals, self._mom2(layer), self.hparams.mom2_update_weight)
                part = LowRankDelta({module: (u, v)})
                part.apply(lm.model)
                applied.append(part)
                factors[module] = (u.cpu(), v.cpu())
        finally:
            for part in reversed(applied):
                part.revert(lm.model)
        return LowRankDelta(factors)
