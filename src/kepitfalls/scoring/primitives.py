"""The scoring primitives of METRICS.md §1, batched and without gradients.

Prompt and target are tokenised separately and concatenated as ids: `ids(prompt) + ids(" " + target)`.
Each prompt of a batch is computed once; its targets continue from its cached keys and values, and logits are
computed only at the positions that are read. Prompts are batched with others of similar length
(`batching.length_batches`): padding costs as much as a real token. The reference code re-tokenises `f"{prompt} {target}"` and then reads positions computed from the separate
tokenisations; for GPT-2-style BPE the two agree, and concatenating ids keeps the positions right for any
tokenizer, including ones that add a BOS token (where the reference is off by one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kepitfalls.scoring.batching import length_batches
from kepitfalls.scoring.router import in_order, route
from kepitfalls.tokens import padded, prompt_ids, target_ids

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


def _batches(count: int, batch_size: int) -> range:
    return range(0, count, batch_size)


@dataclass(frozen=True)
class PromptScores:
    """One prompt's results: a teacher-forced result per target, and log P(· | prompt) over the vocabulary."""

    forced: tuple[TeacherForced, ...]
    next_token: torch.Tensor


def _forced(answer: list[int], logprobs: torch.Tensor) -> TeacherForced:
    """The result for `answer` from the log-probabilities of the positions that predict its tokens."""
    answer_t = torch.tensor(answer, device=logprobs.device)
    return TeacherForced(
        target_ids=answer,
        token_logprobs=logprobs.gather(1, answer_t[:, None]).squeeze(1).tolist(),
        argmax_ids=logprobs.argmax(dim=-1).tolist(),
    )


def _prompt_batch(model: PreTrainedModel, pad_id: int, prefixes: list[list[int]], answers: list[list[list[int]]]) -> list[PromptScores]:
    """One batch of prompts, each computed once: a pass over the prompts keeps their keys and values, and
    the targets' tokens continue from them in a second pass (none when every target is one token).

    Logits are computed only where they are read: the last position of each prompt (its next-token
    distribution, which also predicts every target's first token) and the targets' own positions.
    """
    device = model.device
    ids, mask = (tensor.to(device) for tensor in padded(prefixes, pad_id))
    lasts = torch.tensor([len(p) - 1 for p in prefixes], device=device)
    keep = torch.unique(lasts)
    output = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=keep)
    rows = torch.arange(len(prefixes), device=device)
    first = torch.log_softmax(output.logits[rows, torch.searchsorted(keep, lasts)].float(), dim=-1)
    pairs = [(p, answer) for p, targets in enumerate(answers) for answer in targets]
    longer = [i for i, (_, answer) in enumerate(pairs) if len(answer) > 1]
    rest: dict[int, torch.Tensor] = {}
    if longer:
        owners = torch.tensor([pairs[i][0] for i in longer], device=device)
        cache = output.past_key_values
        cache.reorder_cache(owners)  # one cache row per continued target, copied from its prompt's row
        tail, tail_mask = (tensor.to(device) for tensor in padded([pairs[i][1][:-1] for i in longer], pad_id))
        positions = lasts[owners, None] + 1 + torch.arange(tail.shape[1], device=device)
        logits = model(
            input_ids=tail, attention_mask=torch.cat([mask[owners], tail_mask], dim=1), position_ids=positions,
            past_key_values=cache, use_cache=False,
        ).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        rest = {i: logprobs[j, : len(pairs[i][1]) - 1] for j, i in enumerate(longer)}
    forced = [
        _forced(answer, torch.cat([first[p, None], rest[i]]) if i in rest else first[p, None])
        for i, (p, answer) in enumerate(pairs)
    ]
    results, taken = [], 0
    for p, targets in enumerate(answers):
        results.append(PromptScores(tuple(forced[taken : taken + len(targets)]), first[p].cpu()))
        taken += len(targets)
    return results


@torch.inference_mode()
def _score_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    batch_size: int,
) -> list[PromptScores]:
    """`score_prompts` on prompts already routed (`model` may be a router's `PrefixCachedModel`), in batches
    of similar length (`length_batches`), the results in the prompts' order."""
    prefixes = [prompt_ids(tokenizer, p) for p in prompts]
    answers = [[target_ids(tokenizer, t) for t in ts] for ts in targets]
    results: list[PromptScores | None] = [None] * len(prompts)
    for batch in length_batches(prefixes, answers, batch_size):
        scored = _prompt_batch(model, tokenizer.pad_token_id, [prefixes[i] for i in batch], [answers[i] for i in batch])
        for i, result in zip(batch, scored):
            results[i] = result
    return results  # type: ignore[return-value]


def score_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[Sequence[str]],
    batch_size: int = DEFAULT_BATCH,
) -> list[PromptScores]:
    """Every target of every prompt teacher-forced, and the next-token distribution after every prompt, with
    each prompt computed once (`batch_size` prompts per pass); the prompts are routed first (`route`)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} target lists")
    groups = route(model, tokenizer, prompts, "score_prompts")
    return in_order(groups, [_score_prompts(g.model, tokenizer, g.prompts, [targets[i] for i in g.positions], batch_size) for g in groups])


def teacher_forced(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    targets: Sequence[str],
    batch_size: int = DEFAULT_BATCH,
) -> list[TeacherForced]:
    """Score every target after its prompt, `batch_size` pairs per batch; a prompt that several pairs of a
    batch share is computed once (`score_prompts`, on the prompts routed once here)."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    groups = route(model, tokenizer, prompts, "teacher_forced")
    return in_order(groups, [_teacher_forced(g.model, tokenizer, g.prompts, [targets[i] for i in g.positions], batch_size) for g in groups])


def _teacher_forced(model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], targets: Sequence[str], batch_size: int) -> list[TeacherForced]:
    """`teacher_forced` on prompts already routed."""
    results: list[TeacherForced] = []
    for start in _batches(len(prompts), batch_size):
        chunk = list(zip(prompts[start : start + batch_size], targets[start : start + batch_size]))
        grouped: dict[str, list[str]] = {}
        for prompt, target in chunk:
            grouped.setdefault(prompt, []).append(target)
        scored = _score_prompts(model, tokenizer, list(grouped), list(grouped.values()), batch_size=len(grouped))
        pending = {prompt: iter(s.forced) for prompt, s in zip(grouped, scored)}
        results.extend(next(pending[prompt]) for prompt, _ in chunk)
    return results


def mean_target_prob(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[float]:
    """P̄(target | prompt) for every pair (METRICS.md §1.1)."""
    return [r.mean_prob for r in teacher_forced(model, tokenizer, prompts, targets, batch_size)]


def token_accuracy(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[float]:
    """TokAcc(target | prompt) for every pair (METRICS.md §1.2)."""
    return [r.token_accuracy for r in teacher_forced(model, tokenizer, prompts, targets, batch_size)]


def next_token_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int = DEFAULT_BATCH
) -> torch.Tensor:
    """log P(· | prompt) over the vocabulary at the last prompt position, shape (len(prompts), |V|)."""
    groups = route(model, tokenizer, prompts, "next_token")
    scored = in_order(groups, [_score_prompts(g.model, tokenizer, g.prompts, [()] * len(g.prompts), batch_size) for g in groups])
    return torch.stack([s.next_token for s in scored])


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = DEFAULT_BATCH,
) -> list[str]:
    """Greedy continuations, decoded from the new tokens only (never the prompt or padding)."""
    groups = route(model, tokenizer, prompts, "generate")
    return in_order(groups, [_greedy_generate(g.model, tokenizer, g.prompts, max_new_tokens, batch_size) for g in groups])


def _greedy_generate(model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """`greedy_generate` on prompts already routed."""
    texts: list[str] = []
    for start in _batches(len(prompts), batch_size):
        prefixes = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        ids, mask = padded(prefixes, tokenizer.pad_token_id, left=True)
        width = ids.shape[1]
        output = model.generate(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        texts.extend(tokenizer.decode(row[width:], skip_special_tokens=True) for row in output)
    return texts
