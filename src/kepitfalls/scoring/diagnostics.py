"""Components that deltas install on a model (a codebook adaptor, a router), and what they report.

A delta that adds behaviour rather than changing weights installs a component under a name in
`model.kepitfalls_installed` and removes it when its last delta is reverted. Scoring and suites never ask
which method installed what: they call `prompt_diagnostics`, which asks every installed component with a
`diagnostics(lm, prompts)` method for its per-prompt numbers (whether it fired on a prompt, how far the
prompt was from its memory), and get nothing for a model without components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

from torch import nn

if TYPE_CHECKING:
    from kepitfalls.models.loading import LoadedModel

INSTALLED_ATTRIBUTE = "kepitfalls_installed"


class Diagnosable(Protocol):
    def diagnostics(self, lm: LoadedModel, prompts: Sequence[str]) -> dict[str, list[float]]:
        """Per-prompt values by quantity name (each list as long as `prompts`)."""


def installed(model: nn.Module) -> dict[str, Any]:
    """The components installed on the model, by name (empty for a plain model)."""
    return dict(getattr(model, INSTALLED_ATTRIBUTE, {}))


def install(model: nn.Module, name: str, component: Any) -> None:
    """Register a component under `name`; a second one under the same name is an error."""
    registry = model.__dict__.setdefault(INSTALLED_ATTRIBUTE, {})
    if name in registry:
        raise RuntimeError(f"a component {name!r} is already installed on the model")
    registry[name] = component


def uninstall(model: nn.Module, name: str) -> None:
    """Remove a component; the registry attribute goes with the last one, leaving the model as it was."""
    registry = model.__dict__.get(INSTALLED_ATTRIBUTE, {})
    if name not in registry:
        raise RuntimeError(f"no component {name!r} is installed on the model")
    del registry[name]
    if not registry:
        del model.__dict__[INSTALLED_ATTRIBUTE]


def prompt_diagnostics(lm: LoadedModel, prompt_sets: dict[str, Sequence[str]]) -> dict[str, list[float]]:
    """`<quantity>_<set>` → one value per prompt of the set, from every installed component that reports."""
    found: dict[str, list[float]] = {}
    for component in installed(lm.model).values():
        report = getattr(component, "diagnostics", None)
        if report is None:
            continue
        for set_name, prompts in prompt_sets.items():
            if not prompts:
                continue
            for quantity, values in report(lm, list(prompts)).items():
                if len(values) != len(prompts):
                    raise ValueError(f"diagnostics {quantity!r}: {len(values)} values for {len(prompts)} prompts")
                name = f"{quantity}_{set_name}"
                if name in found:
                    raise ValueError(f"two installed components report {quantity!r}")
                found[name] = [float(v) for v in values]
    return found
