"""The `report` section of params.yaml, read without the full schema: the full one imports every method and
suite (torch, transformers), and the report renders from files alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from kepitfalls.schema import Section, Seed


class Bootstrap(Section):
    """The record-level bootstrap behind every non-binary interval and every paired difference."""

    resamples: Annotated[int, Field(ge=2000)]
    seed: Seed


class ReportOptions(Section):
    """What the tables show and how much a cell must rest on: below `min_n` records it is a smoke value."""

    suites: Annotated[list[str], Field(min_length=1)]
    methods: Annotated[list[str], Field(min_length=1)]
    min_n: PositiveInt
    bootstrap: Bootstrap


class ReportParams(BaseModel):
    """The parts of params.yaml the report stage reads; other sections are validated by the stages using them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    report: ReportOptions


def load_report_params(path: Path) -> ReportParams:
    """`model` and `report` of a params.yaml, validated; errors name the params key."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    try:
        return ReportParams.model_validate(raw)
    except ValidationError as error:
        keys = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{path}: {keys}") from None
