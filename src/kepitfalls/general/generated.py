"""One stored continuation of a Figure-4 prompt: `generation.greedy` makes them, the scorers read them back from
artifacts/general/. Kept apart from the generation code so that scoring stored outputs imports no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    """`new`: the continuation alone; `full`: prompt and continuation decoded together (`generation`)."""

    new: str
    full: str
