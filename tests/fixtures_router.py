"""A memory router for suite tests: takes every prompt and hands it back unchanged, so a memory method's
routing is counted while every score stays the plain model's."""

from __future__ import annotations

from typing import Any, Sequence

from kepitfalls.scoring.router import Router


class TakesEverything(Router):
    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        return list(prompts)
