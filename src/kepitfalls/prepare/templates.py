"""Context templates: short model-generated prefixes that make an edit hold in varied contexts.

Generated once per (model, method) with a fixed seed and stored as an artifact (the `templates@<METHOD>`
stages), so every process uses the same ones. Each method has its own recipe (params `templates.<METHOD>`),
as the references do: ROME samples 10 continuations of 5 and 10 of 10 tokens from "<|endoftext|>"
(`rome_main.py`); MEMIT samples one 10-token continuation of each of "The", "Therefore", "Because", "I",
"You" (`memit_main.py`, `get_context_templates`). Per (length, count) of a recipe, `count // len(prompts)`
top-k samples are drawn per prompt, `length` counting the prompt's tokens (`generate_fast(max_out_len=...)`),
the decoded text (prompt included, special tokens dropped, braces blanked) followed by ". {}". The groups
are stored as the reference's nested list: ["{}"] first, then one group per recipe entry (MEMIT averages
keys within each group, then over the groups).
"""

from __future__ import annotations

import torch

from kepitfalls.models.loading import LoadedModel


@torch.no_grad()
def generate_template_groups(
    lm: LoadedModel, prompts: list[str], recipe: list[tuple[int, int]], seed: int, top_k: int
) -> list[list[str]]:
    """[["{}"], <templates of recipe entry 1>, ...] for the given start prompts."""
    tokenizer = lm.tokenizer
    torch.manual_seed(seed)
    groups = [["{}"]]
    for length, count in recipe:
        group = []
        for prompt in prompts:
            start = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(lm.model.device)
            new = max(length - start.shape[1], 1)
            per_prompt = count // len(prompts)
            if per_prompt == 0:
                continue
            output = lm.model.generate(
                input_ids=start.repeat(per_prompt, 1), attention_mask=torch.ones_like(start).repeat(per_prompt, 1),
                do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0, max_new_tokens=new, min_new_tokens=new,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in output:
                text = tokenizer.decode(row, skip_special_tokens=True)
                group.append(text.replace("{", " ").replace("}", " ") + ". {}")
        if group:
            groups.append(group)
    return groups
