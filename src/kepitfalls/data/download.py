"""Fetch a benchmark's files into data/raw/<name>: from the local mirror when it has them, else from the web.

Either way the bytes stream into a staging folder beside the destination while being hashed and are checked
against the registry's sha256; only a fetch that got every file replaces the destination, so a failure never
leaves a partial or unverified file behind, and leaves the previous verified files in place. A MANIFEST.json
records what was fetched, from where, and its hash; readers check the files against it (`verify_downloads`),
since a file changed after its download would otherwise be read as it is.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from ..atomic import atomic_dir, atomic_path, write_json
from .checksum import Digest, file_chunks, hash_file, verify, write_hashed
from .errors import DataError, DownloadError
from .registry import Benchmark, FileSpec, get_benchmark
from .remote import RetryPolicy, download

MANIFEST = "MANIFEST.json"


def fetch_benchmark(
    name: str, dest: Path, mirror: Path | None, include_optional: bool = False, *, retry: RetryPolicy = RetryPolicy()
) -> dict[str, Any]:
    """Fetch every file of the registered benchmark `name` into `dest`; return the manifest."""
    return fetch_files(get_benchmark(name), Path(dest), mirror, include_optional, retry=retry)


def fetch_files(
    benchmark: Benchmark, dest: Path, mirror: Path | None, include_optional: bool = False, *,
    retry: RetryPolicy = RetryPolicy(),
) -> dict[str, Any]:
    """Like fetch_benchmark, for any Benchmark description (tests describe local servers this way)."""
    if mirror is not None and not mirror.is_dir():
        raise DataError(f"benchmark mirror {mirror} does not exist (or is not a folder)")
    specs = benchmark.files_to_fetch(include_optional)
    if not specs:
        raise DownloadError(f"{benchmark.name}: nothing to fetch (every file is optional and include_optional is off); "
                            "a benchmark needs at least one required file")
    with atomic_dir(dest) as staging:
        with _Fetcher(benchmark.name, staging, mirror, retry) as fetcher:
            entries = [fetcher.fetch(spec) for spec in specs]
        manifest = {"benchmark": benchmark.name, "files": entries}
        write_json(staging / MANIFEST, manifest)
    return manifest


def verify_downloads(raw_root: Path, names: list[str] | None = None) -> None:
    """Check the downloaded benchmarks (`names`, default every folder of `raw_root`) against their manifests.

    A file edited, truncated or bit-flipped after its verified download would otherwise be read as it is:
    loaders do not re-hash, and `dvc repro -s` skips DVC's own check of the stage's dependencies.
    """
    folders = [raw_root / name for name in names] if names is not None else sorted(p for p in raw_root.iterdir() if p.is_dir())
    for folder in folders:
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{manifest} is missing: {folder.name} was not downloaded completely; run its download stage")
        for entry in json.loads(manifest.read_text(encoding="utf-8"))["files"]:
            path = folder / entry["file"]
            if not path.is_file():
                raise DataError(f"{path} is listed in {manifest} but missing; run the download stage of {folder.name}")
            verify(hash_file(path), entry["sha256"], f"{folder.name}/{entry['file']}", f"{path}, checked against {manifest}")


class _Fetcher:
    """Fetches single files for one benchmark; downloads each archive at most once per run."""

    def __init__(self, name: str, dest: Path, mirror: Path | None, retry: RetryPolicy) -> None:
        self.name, self.dest, self.mirror, self.retry = name, dest, mirror, retry
        self.session = requests.Session()
        self.archives: dict[str, Path] = {}
        self._scratch: Path | None = None  # holds downloaded archives; created on first need
        self._stack = ExitStack()

    def __enter__(self) -> "_Fetcher":
        self._stack.enter_context(self.session)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def fetch(self, spec: FileSpec) -> dict[str, Any]:
        target = self.dest / spec.relpath
        local = self.mirror / self.name / spec.relpath if self.mirror is not None else None
        with atomic_path(target) as tmp:
            if local is not None and local.is_file():
                source = f"mirror:{self.name}/{spec.relpath}"
                with open(local, "rb") as handle:
                    digest = write_hashed(file_chunks(handle), tmp)
            elif spec.member is not None:
                source = f"{spec.url}#{spec.member}"
                digest = self._extract(spec.url, spec.member, tmp)
            else:
                source = spec.url
                digest = download(spec.url, tmp, self.retry, self.session)
            verify(digest, spec.sha256, f"{self.name}/{spec.relpath}", source)
        return {
            "file": spec.relpath,
            "sha256": digest.sha256,
            "bytes": digest.size,
            "source": source,
            "sha256_published": spec.sha256 is not None,
        }

    def _extract(self, url: str, member: str, tmp: Path) -> Digest:
        archive = self._archive(url)
        with zipfile.ZipFile(archive) as bundle:
            name = _member_name(bundle, member, url)
            with bundle.open(name) as handle:
                return write_hashed(file_chunks(handle), tmp)

    def _archive(self, url: str) -> Path:
        if url not in self.archives:
            if self._scratch is None:
                self._scratch = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix=".archives.", dir=self.dest)))
            path = self._scratch / f"{len(self.archives)}.zip"
            download(url, path, self.retry, self.session)
            if not zipfile.is_zipfile(path):
                raise DownloadError(f"{url} did not return a zip archive")
            self.archives[url] = path
        return self.archives[url]


def _member_name(bundle: zipfile.ZipFile, member: str, url: str) -> str:
    """The archive entry for `member`, tolerating one extra top-level folder in the archive."""
    names = bundle.namelist()
    if member in names:
        return member
    matches = [n for n in names if n.endswith("/" + member)]
    if len(matches) != 1:
        raise DownloadError(f"{url}: archive has {len(matches)} entries matching {member!r}, expected exactly one")
    return matches[0]
