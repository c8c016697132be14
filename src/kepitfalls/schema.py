"""The strict base of every params.yaml section, so that a typo or a stray key stops a stage instead of
silently changing (or not changing) an experiment."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: A seed every generator accepts (numpy's is 32-bit).
Seed = Annotated[int, Field(ge=0, lt=2**32)]
#: Marks an int or list-of-int field as block indices of a model (negative ones count from the end where the
#: field's type allows them); `kepitfalls.config` checks them against the depth of the model they are for.
LAYER = "layer-index"


class Section(BaseModel):
    """A params.yaml section: every key declared (unknown ones fail), no defaults, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def layer_indices(self) -> dict[str, list[int]]:
        """The values of the fields marked LAYER, by field name, each as a list."""
        found = {}
        for name, field in type(self).model_fields.items():
            if LAYER in field.metadata:
                value = getattr(self, name)
                found[name] = list(value) if isinstance(value, (list, tuple)) else [value]
        return found
