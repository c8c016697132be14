"""MEND's gradient-decomposition network (Mitchell et al. 2022a; eric-mitchell/mend `algs/mend.py`, `nn.py`).

For every edited linear layer the gradient of the edit loss is Σ_t δ_t x_tᵀ (x_t its input, δ_t the loss's
gradient with respect to its output, one row per token). The editor maps each pair (x_t, δ_t) to (x̃_t, δ̃_t)
and the layer's update is edit_lr_i · Σ_t δ̃_t x̃_tᵀ, kept as the two factors (a low-rank delta).

As the reference (config `alg/mend.yaml`: norm, combine, shared, init id, n_hidden 1, rank 1920):
- x and δ are standardised with running means and standard deviations, accumulated only while training
  (Welford's counts; here merged per edit with Chan's formula, the same numbers up to rounding);
- the standardised pair is concatenated and passed through an `IDMLP`: n_hidden + 1 low-rank residual
  layers out = x + clamp(scale_m · (U V x + b) + shift_m, min=0), U zero so the net starts as the identity.
  The reference clamps in every layer (its `relu` flag is unused), and so does this one;
- one network per (input, output) shape, shared by the layers of that shape, each layer its own mode m
  (the scale/shift embeddings);
- rows whose x or δ is all zero (tokens after the last loss position) are dropped;
- one learned edit learning rate per edited layer, initialised to `edit_lr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kepitfalls.tensorfile import load_tensors, save_tensors

#: Standardisation epsilon of the reference (`(u - mean) / (std + 1e-7)`).
NORM_EPS = 1e-7


class LowRankResidual(nn.Module):
    """One `LRLinear` of the reference: x + clamp(scale_m · (U (V x) + b) + shift_m, min=0), U starting at zero."""

    def __init__(self, width: int, rank: int, modes: int, generator: torch.Generator) -> None:
        super().__init__()
        inner = min(rank, width)
        self.u = nn.Parameter(torch.zeros(width, inner))
        self.v = nn.Parameter(torch.randn(inner, width, generator=generator))
        self.bias = nn.Parameter(torch.zeros(width))
        self.mode_scale = nn.Parameter(torch.ones(modes, width))
        self.mode_shift = nn.Parameter(torch.zeros(modes, width))

    def forward(self, x: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """`modes`: each row's mode (the layer it comes from)."""
        pre = (x @ self.v.T) @ self.u.T + self.bias
        return x + (pre * self.mode_scale[modes] + self.mode_shift[modes]).clamp(min=0)


class RunningNorm(nn.Module):
    """Running mean and variance of the rows seen while training; frozen (and required) at edit time."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(width, dtype=torch.float64))

    @torch.no_grad()
    def observe(self, rows: torch.Tensor) -> None:
        """Merge a block of rows into the running statistics (Chan et al.'s parallel update)."""
        rows = rows.double()
        n = rows.shape[0]
        if n == 0:
            return
        mean = rows.mean(0)
        m2 = ((rows - mean) ** 2).sum(0)
        total = self.count + n
        diff = mean - self.mean
        self.mean += diff * (n / total)
        self.m2 += m2 + diff**2 * (self.count * n / total)
        self.count.fill_(total)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if self.count < 2:
            raise RuntimeError(f"MEND normalisation needs at least 2 observed rows, has {int(self.count)}: train the editor first")
        std = (self.m2 / (self.count - 1)).sqrt()
        return (rows - self.mean.float()) / (std.float() + NORM_EPS)


class GradientTransform(nn.Module):
    """The editor shared by all edited layers of one (input, output) shape."""

    def __init__(self, x_dim: int, delta_dim: int, rank: int, n_hidden: int, modes: int, generator: torch.Generator) -> None:
        super().__init__()
        self.x_dim, self.delta_dim = x_dim, delta_dim
        self.x_norm, self.delta_norm = RunningNorm(x_dim), RunningNorm(delta_dim)
        width = x_dim + delta_dim
        self.layers = nn.ModuleList(LowRankResidual(width, rank, modes, generator) for _ in range(n_hidden + 1))

    def forward(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], modes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(x̃, δ̃) for the rows of each layer of this shape, all layers' rows in one pass (each of the network's
        matrices is read once, not once per layer); in training mode the rows first enter the statistics."""
        if self.training:
            for x, delta in pairs:
                self.x_norm.observe(x)
                self.delta_norm.observe(delta)
        hidden = torch.cat([torch.cat([self.x_norm(x), self.delta_norm(delta)], dim=-1) for x, delta in pairs])
        counts = [x.shape[0] for x, _ in pairs]
        row_modes = torch.repeat_interleave(torch.tensor(modes), torch.tensor(counts)).to(hidden.device)
        for layer in self.layers:
            hidden = layer(hidden, row_modes)
        return [tuple(rows.split([self.x_dim, self.delta_dim], dim=-1)) for rows in hidden.split(counts)]


@dataclass(frozen=True)
class Site:
    """An edited linear layer: its module name, shape group and mode (index within the group)."""

    module: str
    group: str
    mode: int


def group_key(x_dim: int, delta_dim: int) -> str:
    return f"{x_dim}x{delta_dim}"


class MendEditor(nn.Module):
    """The per-shape gradient transforms plus one learned edit learning rate per edited layer."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, n_hidden: int, edit_lr: float, seed: int) -> None:
        """`shapes`: module name → (input width, output width), in the order the edit learning rates follow."""
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        groups: dict[str, list[str]] = {}
        for module, (x_dim, delta_dim) in shapes.items():
            groups.setdefault(group_key(x_dim, delta_dim), []).append(module)
        self.shapes = dict(shapes)
        self.sites = [Site(m, group_key(*shapes[m]), groups[group_key(*shapes[m])].index(m)) for m in shapes]
        self.transforms = nn.ModuleDict({
            key: GradientTransform(*shapes[members[0]], rank, n_hidden, len(members), generator) for key, members in groups.items()
        })
        self.edit_lrs = nn.Parameter(torch.full((len(shapes),), float(edit_lr)))

    def hyper_parameters(self) -> list[nn.Parameter]:
        """What Adam at `lr` trains (the networks); `edit_lrs` has its own optimiser at `lr_lr`."""
        return list(self.transforms.parameters())

    def observe(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Only accumulate the normalisation statistics (what a training edit does before the network)."""
        for site in self.sites:
            x, delta = _kept(*factors[site.module])
            transform = self.transforms[site.group]
            transform.x_norm.observe(x)
            transform.delta_norm.observe(delta)

    def updates(self, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per module, (edit_lr · δ̃ᵀ (out, T), x̃ᵀ (in, T)): the update ΔW = U Vᵀ as low-rank factors."""
        result = {}
        for key, transform in self.transforms.items():
            members = [(index, site) for index, site in enumerate(self.sites) if site.group == key]
            outputs = transform([_kept(*factors[site.module]) for _, site in members], [site.mode for _, site in members])
            for (index, site), (x_t, delta_t) in zip(members, outputs):
                result[site.module] = ((self.edit_lrs[index] * delta_t).T, x_t.T)
        return {site.module: result[site.module] for site in self.sites}


def _kept(x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows (tokens) where neither x nor δ is all zero, in float32."""
    keep = (x != 0).any(-1) & (delta != 0).any(-1)
    return x[keep].float(), delta[keep].float()


def save_editor(path: Path, editor: MendEditor, rank: int, n_hidden: int, metadata: dict[str, Any]) -> None:
    """The editor's parameters and statistics with what rebuilds it (shapes in order, rank, depth)."""
    shapes = [[module, *shape] for module, shape in editor.shapes.items()]  # a list: JSON objects get sorted
    save_tensors(path, editor.state_dict(), {**metadata, "shapes": shapes, "rank": rank, "n_hidden": n_hidden})


def load_editor(path: Path) -> tuple[MendEditor, dict[str, Any]]:
    """An editor saved by `save_editor`, in eval mode (statistics frozen), and the file's metadata."""
    tensors, metadata = load_tensors(path)
    shapes = {module: (int(a), int(b)) for module, a, b in metadata["shapes"]}
    editor = MendEditor(shapes, metadata["rank"], metadata["n_hidden"], edit_lr=0.0, seed=0)
    editor.load_state_dict(tensors, strict=True)
    return editor.eval(), metadata
