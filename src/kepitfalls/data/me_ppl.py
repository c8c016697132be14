"""ME-PPL (Yang et al. 2024): a JSON list of {"Corpus", "Text"} sentences for the collapse indicator."""

from __future__ import annotations

from pathlib import Path

from .records import json_records


def load_me_ppl(path: Path) -> list[str]:
    """The texts in file order (leading spaces kept: Yang et al. score them as they are)."""
    return [fields.text("Text", non_empty=True) for fields in json_records(Path(path))]
