"""Re-running blocks on each prompt's suffix only, with the prefixes' attention keys and values cached."""

from __future__ import annotations

from typing import Sequence

import torch

from kepitfalls.hidden.hooks import capture
from kepitfalls.hidden.partial import backbone, only_layers, without_final_norm
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch


class SuffixStack:
    """Blocks `start..stop-1` re-run on each prompt's suffix only, the prefixes' keys and values cached.

    A change made at block `start` or later to a prompt's token `split[row]` (ROME's δ at the subject's
    last token, KN's scaled neurons at the prompt's last token) cannot reach earlier tokens, so the prefix
    `[0, split)` of every row is run once through the stack and its attention keys/values are kept;
    every optimisation step or scaled pass then runs only the suffix tokens, from any block of the stack
    on. Exact up to float rounding; needs an architecture whose embeddings enter the residual stream
    unchanged.
    """

    def __init__(self, lm: LoadedModel, sequences: Sequence[list[int]], split: Sequence[int], start: int, stop: int) -> None:
        from transformers import DynamicCache

        device = lm.model.device
        self.lm, self.start, self.stop = lm, start, stop
        full = Batch.from_ids(sequences, lm.tokenizer.pad_token_id, device)
        residual, _ = capture(lm, lm.arch.layer.format(start), full)
        self.split = torch.tensor(list(split), device=device)
        self.suffix_len = torch.tensor([len(s) - k for s, k in zip(sequences, split)], device=device)
        width_p, width_s = max(max(split), 1), int(self.suffix_len.max())
        rows = len(sequences)
        prefix = residual.new_zeros(rows, width_p, residual.shape[-1])
        suffix = residual.new_zeros(rows, width_s, residual.shape[-1])
        for row, (seq, k) in enumerate(zip(sequences, split)):
            prefix[row, :k] = residual[row, :k]
            suffix[row, : len(seq) - k] = residual[row, k : len(seq)]
        self.suffix = suffix
        dtype = residual.dtype
        p_pos = torch.arange(width_p, device=device)
        s_pos = torch.arange(width_s, device=device)
        prefix_valid = p_pos[None, :] < self.split[:, None]  # (rows, width_p)
        suffix_valid = s_pos[None, :] < self.suffix_len[:, None]
        # Prefix pass: causal within the valid prefix; padded queries see themselves (their output is unused).
        allowed_p = (p_pos[None, :, None] >= p_pos[None, None, :]) & prefix_valid[:, None, :]
        allowed_p |= torch.eye(width_p, dtype=torch.bool, device=device)[None]
        # Suffix pass: the row's valid prefix, then causal within the valid suffix.
        causal_s = (s_pos[:, None] >= s_pos[None, :])[None] & suffix_valid[:, None, :]
        causal_s |= torch.eye(width_s, dtype=torch.bool, device=device)[None]
        allowed_s = torch.cat([prefix_valid[:, None, :].expand(rows, width_s, width_p), causal_s], dim=2)
        # No mask where every query sees every key (one suffix token after full prefixes): a plain pass's
        # attention gets none there, and an all-zero mask would round differently in fused attention.
        self.mask_s = None if bool(allowed_s.all()) else _additive(allowed_s, dtype)
        self.positions_s = self.split[:, None] + s_pos[None, :]
        self.cache = DynamicCache(config=lm.model.config)
        with torch.no_grad(), only_layers(lm.model, lm.arch, start, stop):
            backbone(lm)(
                inputs_embeds=prefix, attention_mask=_additive(allowed_p, dtype), position_ids=p_pos[None].expand(rows, -1),
                past_key_values=self.cache, use_cache=True,
            )
        self._saved = [(layer.keys, layer.values) for layer in self.cache.layers[start:stop]]

    def hidden(self, suffix: torch.Tensor | None = None, start: int | None = None) -> torch.Tensor:
        """Final-normed outputs of block `stop - 1` for the suffix tokens, shape (rows, max suffix, d).

        `suffix` is the residual entering block `start` (default: the prompts' own, entering the stack's
        first block); a stack of one prompt runs any number of rows of it (KN's scaled copies).
        """
        suffix = self.suffix if suffix is None else suffix
        return self._run(suffix, self.start if start is None else start, self.stop)

    def block(self, suffix: torch.Tensor, layer: int) -> torch.Tensor:
        """The output of block `layer` alone (no final norm) for suffix rows entering it: a caller that steps
        through the blocks one at a time can change the batch between them (KN adds rows at every block)."""
        if not self.start <= layer < self.stop:
            raise ValueError(f"block {layer} is outside this stack's blocks {self.start}..{self.stop - 1}")
        with without_final_norm(self.lm):
            return self._run(suffix, layer, layer + 1)

    def _run(self, suffix: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks `start..stop-1` and then the final norm (unless the caller disabled it) on `suffix`, every
        block's cache reset to the prefixes'."""
        rows = suffix.shape[0]
        for layer, (keys, values) in zip(self.cache.layers[self.start : self.stop], self._saved):
            layer.keys, layer.values = keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)
        with only_layers(self.lm.model, self.lm.arch, start, stop):
            return backbone(self.lm)(
                inputs_embeds=suffix, attention_mask=None if self.mask_s is None else self.mask_s.expand(rows, -1, -1, -1),
                position_ids=self.positions_s.expand(rows, -1), past_key_values=self.cache, use_cache=True,
            ).last_hidden_state


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean (rows, queries, keys) mask as the additive (rows, 1, queries, keys) float mask attention adds."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
