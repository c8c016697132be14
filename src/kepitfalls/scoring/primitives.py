"""The scoring primitives of METRICS.md §1, batched and without gradients.

Prompt and target are tokenised separately and concatenated as ids: `ids(prompt) + ids(" " + target)`.
The reference code re-tokenises `f"{prompt} {target}"` and then reads positions computed from the separate
tokenisations; for GPT-2-style BPE the two agree, and concatenating ids keeps the positions right for any
tokenizer, including ones that add a BOS token (where the reference is off by one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kepitfalls.scoring.router import route

DEFAULT_BATCH = 32


@dataclass(frozen=True)
class TeacherForced:
    """Per-token results of one prompt ⊕ target pass."""

    target_ids: list[int]
    token_logprobs: list[float]
    argmax_ids: list[int]

    @property
    def mean_prob(self) -> float:
        """P̄: the geometric mean of the target tokens' probabilities."""
        return float(torch.tensor(self.token_logprobs, dtype=torch.float64).mean().exp())

    @property
    def mean_nll(self) -> float:
        """The mean negative log-probability of the target tokens (ROME stores this)."""
        return -float(torch.tensor(self.token_logprobs, dtype=torch.float64).mean())

    @property
    def token_accuracy(self) -> float:
        """TokAcc: the share of target tokens that are the argmax under teacher forcing."""
        hits = sum(a == t for a, t in zip(self.argmax_ids, self.target_ids))
        return hits / len(self.target_ids)


def target_ids(tokenizer: PreTrainedTokenizerBase, target: str) -> list[int]:
    """Token ids of a target, always with a leading space and never with special tokens."""
    if not target.strip():
        raise ValueError(f"empty target {target!r}")
    return tokenizer(" " + target.lstrip(" "), add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a prompt, with whatever special tokens (BOS) the tokenizer adds."""
    return tokenizer(prompt)["input_ids"]


def _right_padded(sequences: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def _batches(count: int, batch_size: int) -> range:
    return range(0, count, batch_size)


@torch.inference_mode()
def teacher_forced(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int = DEFAULT_BATCH,
) -> list[TeacherForced]:
    """Score every target after its prompt in one teacher-forced pass per batch.

    Logits are computed only for the span of positions that predict target tokens.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    model, prompts = route(model, tokenizer, prompts, "teacher_forced")
    device = model.device
    results: list[TeacherForced] = []
    for start in _batches(len(prompts), batch_size):
        prefixes = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        answers = [target_ids(tokenizer, t) for t in targets[start : start + batch_size]]
        ids, mask = _right_padded([p + a for p, a in zip(prefixes, answers)], tokenizer.pad_token_id, device)
        first = min(len(p) for p in prefixes) - 1
        last = max(len(p) + len(a) for p, a in zip(prefixes, answers)) - 1
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.arange(first, last, device=device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, (prefix, answer) in enumerate(zip(prefixes, answers)):
            positions = torch.arange(len(prefix) - 1 - first, len(prefix) - 1 - first + len(answer), device=device)
            row_logprobs = logprobs[row, positions]
            answer_t = torch.tensor(answer, device=device)
            results.append(
                TeacherForced(
                    target_ids=answer,
                    token_logprobs=row_logprobs.gather(1, answer_t[:, None]).squeeze(1).tolist(),
                    argmax_ids=row_logprobs.argmax(dim=-1).tolist(),
                )
            )
    return results


def mean_target_prob(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[float]:
    """P̄(target | prompt) for every pair (METRICS.md §1.1)."""
    return [r.mean_prob for r in teacher_forced(model, tokenizer, prompts, targets, batch_size)]


def token_accuracy(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[float]:
    """TokAcc(target | prompt) for every pair (METRICS.md §1.2)."""
    return [r.token_accuracy for r in teacher_forced(model, tokenizer, prompts, targets, batch_size)]


def argmax_agreement(pre_argmax: Sequence[int], post_argmax: Sequence[int]) -> float:
    """LocAgree: the share of teacher-forced positions whose argmax token is unchanged (METRICS.md §1.3)."""
    if len(pre_argmax) != len(post_argmax) or not pre_argmax:
        raise ValueError(f"argmax sequences differ in length or are empty: {len(pre_argmax)} vs {len(post_argmax)}")
    return sum(a == b for a, b in zip(pre_argmax, post_argmax)) / len(pre_argmax)


@torch.inference_mode()
def next_token_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int = DEFAULT_BATCH
) -> torch.Tensor:
    """log P(· | prompt) over the vocabulary at the last prompt position, shape (len(prompts), |V|)."""
    model, prompts = route(model, tokenizer, prompts, "next_token")
    device = model.device
    rows: list[torch.Tensor] = []
    for start in _batches(len(prompts), batch_size):
        prefixes = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        ids, mask = _right_padded(prefixes, tokenizer.pad_token_id, device)
        hidden_logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(p) - 1 for p in prefixes], device=device)
        picked = hidden_logits[torch.arange(len(prefixes), device=device), last]
        rows.append(torch.log_softmax(picked.float(), dim=-1).cpu())
    return torch.cat(rows)


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = DEFAULT_BATCH,
) -> list[str]:
    """Greedy continuations, decoded from the new tokens only (never the prompt or padding)."""
    model, prompts = route(model, tokenizer, prompts, "generate")
    texts: list[str] = []
    for start in _batches(len(prompts), batch_size):
        prefixes = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prefix in enumerate(prefixes):  # left padding, so every row continues from the same column
            ids[row, width - len(prefix) :] = torch.tensor(prefix)
            mask[row, width - len(prefix) :] = 1
        output = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        texts.extend(tokenizer.decode(row[width:], skip_special_tokens=True) for row in output)
    return texts
