"""Editing methods, one module per method named exactly as its `methods.<NAME>` key in params.yaml.

The module names match the params keys so that `dvc.yaml` can make each `cell@<METHOD>-<suite>` stage
depend on `src/kepitfalls/methods/<METHOD>.py` alone (DVC interpolation cannot change case). Adding a method
is adding its module, whose `EditMethod` class carries the same `name`: the methods are discovered from the
package's modules (every one but `base`), with no list to keep in step.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names stay importable without torch (`kepitfalls --help` lists them)
    from kepitfalls.methods.base import EditMethod

#: The module every method builds on; every other module of this package is a method.
BASE_MODULE = "base"
#: Methods implemented here, by params key (= module name), in alphabetical order.
SUPPORTED: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != BASE_MODULE))


def method_class(name: str) -> type[EditMethod]:
    """The class implementing a method: the `EditMethod` defined in the module of that name whose `name` is
    it; a clear error for methods not (yet) implemented."""
    from kepitfalls.methods.base import EditMethod

    if name not in SUPPORTED:
        raise NotImplementedError(f"editing method {name!r} is not implemented; supported: {', '.join(SUPPORTED)}")
    module = importlib.import_module(f"{__name__}.{name}")
    found = [
        cls for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, EditMethod) and cls.__module__ == module.__name__ and getattr(cls, "name", None) == name
    ]
    if len(found) != 1:
        raise TypeError(f"{module.__file__} must define exactly one EditMethod subclass with name = {name!r}, found {len(found)}")
    return found[0]
