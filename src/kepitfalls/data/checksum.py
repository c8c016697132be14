"""sha256 of files, the one hashing helper: hash-while-writing (a download is checked without being read
twice), hashing a file on disk, and the check against a published or pinned hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import ChecksumError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int


def file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def write_hashed(chunks: Iterable[bytes], target: Path) -> Digest:
    """Write `chunks` to `target` (truncating it) and return the sha256 and size of what was written."""
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return Digest(digest.hexdigest(), size)


def hash_file(path: Path) -> Digest:
    """The sha256 and size of a file on disk."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in file_chunks(handle):
            digest.update(chunk)
            size += len(chunk)
    return Digest(digest.hexdigest(), size)


def verify(digest: Digest, expected: str | None, file: str, source: str) -> None:
    """Raise if a published hash exists and differs; with no published hash there is nothing to compare."""
    if expected is not None and digest.sha256 != expected:
        raise ChecksumError(file, source, expected, digest.sha256)


def check_pinned(path: Path, expected: str) -> None:
    """Raise ChecksumError unless the file has its pinned sha256 (model and encoder wheels and files)."""
    verify(hash_file(path), expected, str(path), "a pinned download")
