"""Token ids as methods and scoring both read them: prompts, targets, the subject's last token, padding.

Prompt and target are tokenised separately and concatenated as ids (`prompt_ids(prompt) + target_ids(target)`),
so positions stay right for any tokenizer, including ones that add a BOS token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def target_ids(tokenizer: PreTrainedTokenizerBase, target: str) -> list[int]:
    """Token ids of a target, always with a leading space and never with special tokens."""
    if not target.strip():
        raise ValueError(f"empty target {target!r}")
    return tokenizer(" " + target.lstrip(" "), add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt, with whatever special tokens (BOS) the tokenizer adds."""
    return tokenizer(prompt)["input_ids"]


def subject_last_index(tokenizer: PreTrainedTokenizerBase, template: str, subject: str) -> tuple[list[int], int]:
    """Token ids of `template.format(subject)` and the index of the subject's last token.

    Found through character offsets, so it holds for tokenizers that add BOS and for subjects anywhere in
    the prompt (ROME's "subject_last" fact token).
    """
    if template.count("{}") != 1:
        raise ValueError(f"prompt {template!r} must mark the subject {subject!r} with exactly one '{{}}'")
    start = template.index("{}")
    end = start + len(subject)
    text = template.format(subject)
    encoded = tokenizer(text, return_offsets_mapping=True)
    hits = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start and b > a]
    if not hits:
        raise ValueError(f"subject {subject!r} not found among the tokens of {text!r}")
    return encoded["input_ids"], hits[-1]


def padded(sequences: Sequence[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) on the CPU, each sequence padded with `pad_id` to the longest: on the right, or on
    the left (`left`, so that every row of a generation continues from the same column)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        columns = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, columns] = torch.tensor(seq)
        mask[row, columns] = 1
    return ids, mask


@dataclass
class Batch:
    """Right-padded token ids with an attention mask, on the model's device."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @classmethod
    def from_ids(cls, sequences: Sequence[list[int]], pad_id: int, device: torch.device) -> "Batch":
        ids, mask = padded(sequences, pad_id)
        return cls(ids.to(device), mask.to(device))
