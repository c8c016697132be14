"""The sentence encoder (all-MiniLM-L6-v2 from its pinned wheel): reproduces a stored cosine, refuses bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_encoder import encoder_dir  # noqa: F401
from fixtures_models import single_thread  # noqa: F401  (autouse)

from kepitfalls.encoder import MINILM, SentenceEncoder
from kepitfalls.data.checksum import check_pinned
from kepitfalls.data.errors import ChecksumError

#: Computed once with this module (float32, one thread, transformers 5.23.0).
STORED_COSINE = 0.8821430206298828


def test_cosine_of_two_fixed_sentences(encoder_dir: Path) -> None:
    encoder = SentenceEncoder(encoder_dir)
    vectors = encoder.encode(["The Eiffel Tower is located in Paris.", "The Eiffel Tower stands in the French capital."])
    assert vectors.shape == (2, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-6)
    assert abs(float(vectors[0] @ vectors[1]) - STORED_COSINE) < 1e-5


def test_padding_does_not_change_an_embedding(encoder_dir: Path) -> None:
    """Mean pooling honours the attention mask: a sentence embeds the same alone and beside a longer one."""
    encoder = SentenceEncoder(encoder_dir)
    alone = encoder.encode(["Paris"])
    batched = encoder.encode(["Paris", "A much longer sentence that forces padding of the first one in the batch."])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_a_tampered_file_is_refused(encoder_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "config.json"
    copy.write_bytes((encoder_dir / "config.json").read_bytes() + b" ")
    with pytest.raises(ChecksumError, match="config.json"):
        check_pinned(copy, MINILM.files["config.json"])


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SentenceEncoder(tmp_path)
