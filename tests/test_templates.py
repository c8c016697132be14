"""Context templates: each method's recipe, generated on a tiny model."""

from __future__ import annotations

import pytest

from fixtures_models import single_thread, tiny_lm  # noqa: F401
from kepitfalls.models.loading import LoadedModel
from kepitfalls.prepare.templates import generate_template_groups

MEMIT_PROMPTS = ["The", "Therefore", "Because", "I", "You"]


def test_memit_recipe_gives_one_sample_per_prompt(tiny_lm: LoadedModel) -> None:
    groups = generate_template_groups(tiny_lm, MEMIT_PROMPTS, [(10, 5)], seed=0, top_k=5)
    assert groups[0] == ["{}"]
    assert len(groups) == 2 and len(groups[1]) == 5
    for prompt, template in zip(MEMIT_PROMPTS, groups[1]):
        assert template.startswith(prompt) and template.endswith(". {}")
        assert template.count("{}") == 1


def test_rome_recipe_gives_one_group_per_length(tiny_lm: LoadedModel) -> None:
    groups = generate_template_groups(tiny_lm, ["<|endoftext|>"], [(5, 3), (10, 2)], seed=0, top_k=5)
    assert [len(g) for g in groups] == [1, 3, 2]
    assert all(len(short) < len(long) for short in groups[1] for long in groups[2])


def test_templates_are_seeded(tiny_lm: LoadedModel) -> None:
    first = generate_template_groups(tiny_lm, MEMIT_PROMPTS, [(8, 5)], seed=3, top_k=5)
    again = generate_template_groups(tiny_lm, MEMIT_PROMPTS, [(8, 5)], seed=3, top_k=5)
    other = generate_template_groups(tiny_lm, MEMIT_PROMPTS, [(8, 5)], seed=4, top_k=5)
    assert first == again
    assert first != other


def test_no_recipe_means_the_bare_prompt_only(tiny_lm: LoadedModel) -> None:
    assert generate_template_groups(tiny_lm, [], [], seed=0, top_k=5) == [["{}"]]
