"""Benchmark data: fetching files into data/raw/<name> (download.py) and typed loaders, one module each.

The loaders live in their own modules (counterfact, portability, zsre, mquake, pitfalls, locality, piqa,
nq, sst2, gsm8k, samsum) and are imported from there.
"""

from .download import fetch_benchmark
from .errors import ChecksumError, DataError, DownloadError, InvalidFileError, MalformedRecordError, OfflineError
from .records import select_subset
from .registry import Benchmark, FileSpec, benchmark_names, get_benchmark

__all__ = [
    "Benchmark",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "FileSpec",
    "InvalidFileError",
    "MalformedRecordError",
    "OfflineError",
    "benchmark_names",
    "fetch_benchmark",
    "get_benchmark",
    "select_subset",
]
