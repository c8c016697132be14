"""Errors raised while fetching and reading benchmark files; each names the file it concerns."""

from __future__ import annotations

from pathlib import Path

MIRROR_HINT = "set KEPITFALLS_MIRROR or params `data.mirror` to a benchmark mirror that holds this file"


class DataError(Exception):
    """Base class: a benchmark file could not be fetched or read."""


class InvalidFileError(DataError):
    """A file is not valid JSON/JSONL/TSV (e.g. truncated), or its top level has the wrong shape."""

    def __init__(self, file: Path | str, problem: str) -> None:
        self.file = Path(file)
        super().__init__(f"{file}: {problem}")


class MalformedRecordError(DataError):
    """One record lacks a field or has a field of the wrong type."""

    def __init__(self, file: Path | str, index: int | str, field: str, problem: str) -> None:
        self.file, self.index, self.field = Path(file), index, field
        super().__init__(f"{file}: record {index}: field '{field}': {problem}")


class ChecksumError(DataError):
    """The bytes obtained for a file do not have the sha256 published or pinned for it (the benchmark
    registry, the model and encoder wheels)."""

    def __init__(self, file: str, source: str, expected: str, actual: str) -> None:
        self.file, self.source, self.expected, self.actual = file, source, expected, actual
        super().__init__(f"{file} (from {source}): sha256 mismatch: expected {expected}, got {actual}")


class DownloadError(DataError):
    """A public URL could not be fetched (HTTP error, repeated interruption, unexpected page)."""


class OfflineError(DownloadError):
    """The server could not be reached at all, even after retries."""
