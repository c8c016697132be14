"""DVC stage `templates@<METHOD>`: the method's context templates for the model, generated once, seeded.

Usage: python stages/templates.py <METHOD>
"""

from __future__ import annotations

import sys

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.methods.templates import generate_template_groups
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model

if __name__ == "__main__":
    method = sys.argv[1]
    params = load_params()
    configure(params)
    settings = getattr(params.templates, method)
    lm = load_current_model(params)
    groups = generate_template_groups(lm, list(settings.prompts), list(settings.recipe), seed=settings.seed, top_k=settings.top_k)
    payload = {"model": lm.identity, "settings": settings.model_dump(mode="json"), "groups": groups}
    write_json(layout.templates_file(params.model, method), payload)
    print(f"{method}: {sum(map(len, groups))} templates in {len(groups)} groups")
