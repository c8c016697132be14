"""DVC stage `prepare@<METHOD>`: everything a method needs before its first edit, built once per model.

Writes `artifacts/methods/<model>/<METHOD>/`: the context templates (seeded, `templates.<METHOD>`) and
whatever the method's own `prepare` hook builds there (a trained editor, an embedded store), plus the
figures that hook reports as `metrics/prepare/<METHOD>.json`. The directory replaces the old one only when
the whole stage succeeds.

Usage: python stages/prepare.py <METHOD>
"""

from __future__ import annotations

import dataclasses
import sys

from kepitfalls import layout
from kepitfalls.atomic import atomic_dir, write_json
from kepitfalls.editing import build_method
from kepitfalls.params import load_params
from kepitfalls.prepare.templates import generate_template_groups
from kepitfalls.runtime import configure, load_current_model

if __name__ == "__main__":
    name = sys.argv[1]
    params = load_params()
    method = build_method(params, name)  # a bad hyper-parameter fails before the model loads
    configure(params)
    settings = getattr(params.templates, name)
    lm = load_current_model(params)
    target = layout.method_dir(params.model, name)
    with atomic_dir(target) as out_dir:
        groups = generate_template_groups(lm, list(settings.prompts), list(settings.recipe), seed=settings.seed, top_k=settings.top_k)
        payload = {"model": lm.identity, "settings": settings.model_dump(mode="json"), "groups": groups}
        write_json(out_dir / "templates.json", payload)
        method.artifacts = dataclasses.replace(method.artifacts, templates_file=out_dir / "templates.json", method_dir=out_dir)
        figures = method.prepare(lm, params, out_dir)
    write_json(layout.prepare_metrics_file(name), {"templates": sum(map(len, groups)), **figures})
    print(f"{name}: {sum(map(len, groups))} templates in {len(groups)} groups; {figures or 'nothing else to prepare'}")
