"""Batched greedy generation for the Figure-4 tasks: left padding, the KV cache, two decodings per prompt.

`new` is the continuation alone (what the clean scorers read). `full` is the prompt and the continuation
decoded together with special tokens kept, as Gu et al. decode `generate`'s whole output row (their scorers
split it on a marker and chop a trailing `<|endoftext|>`); the left padding is left out of `full`: Gu et al.
pad every prompt to the tokenizer's maximum length, which with an attention mask changes nothing but the
pad strings at the start of the text and multiplies the cost.

The prompts pass through the memory router first (`scoring.router.route`), as every scoring primitive's do:
under a memory method's memory the model continues the routed text (IKE's demonstrations and facts before
the task prompt, SERAC's matched edit where the prompt is in scope, on its counterfactual model where it has
one), reusing a shared prefix's keys and values; `full` still shows the task prompt, not what the router put
before it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from kepitfalls.general.generated import Generation
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.router import in_order, route
from kepitfalls.tokens import padded, prompt_ids


@torch.inference_mode()
def greedy(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[Generation]:
    """Greedy continuations of every prompt, `batch_size` prompts per `generate` call.

    Prompts are sorted by length within the call order so a batch pads little; results come back in the
    prompts' order. Finished rows are padded with EOS by `generate`, as in Gu et al.'s runs.
    """
    groups = route(lm.model, lm.tokenizer, prompts, "generate")
    return in_order(groups, [_greedy(g.model, lm, [prompts[i] for i in g.positions], g.prompts, max_new_tokens, batch_size) for g in groups])


def _greedy(model: Any, lm: LoadedModel, prompts: Sequence[str], routed: Sequence[str], max_new_tokens: int, batch_size: int) -> list[Generation]:
    """`greedy` on prompts already routed: `model` continues `routed`, `full` shows the prompts as asked."""
    tokenizer = lm.tokenizer
    shown = [prompt_ids(tokenizer, p) for p in prompts]
    encoded = [prompt_ids(tokenizer, p) for p in routed]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    results: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = padded([encoded[i] for i in rows], tokenizer.pad_token_id, left=True)
        width = ids.shape[1]
        output = model.generate(
            input_ids=ids.to(lm.model.device), attention_mask=mask.to(lm.model.device), max_new_tokens=max_new_tokens,
            do_sample=False, use_cache=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        ).cpu()
        for row, index in enumerate(rows):
            continuation = output[row, width:].tolist()
            results[index] = Generation(
                new=tokenizer.decode(continuation, skip_special_tokens=True),
                full=tokenizer.decode(shown[index] + continuation, skip_special_tokens=False),
            )
    return [results[i] for i in range(len(prompts))]
