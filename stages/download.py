"""DVC stage: fetch one benchmark into data/raw/<benchmark> (mirror first, public URL otherwise).

Usage: python stages/download.py <benchmark> [--include-optional]
Optional files are also fetched when params.yaml sets `data.benchmarks.<benchmark>.include_optional: true`.
"""

from __future__ import annotations

import argparse
import sys

from kepitfalls.data.download import fetch_benchmark
from kepitfalls.data.registry import benchmark_names
from kepitfalls.data.settings import Data
from kepitfalls.params import PROJECT_ROOT, load_sections, mirror_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=benchmark_names())
    parser.add_argument("--include-optional", action="store_true", help="also fetch files the mirror lacks")
    args = parser.parse_args(argv)

    params = load_sections({"data": Data})  # no model code: the `params` stage validated the rest
    settings = params.data.benchmarks.get(args.benchmark)
    include_optional = args.include_optional or (settings is not None and settings.include_optional)
    dest = PROJECT_ROOT / "data" / "raw" / args.benchmark
    manifest = fetch_benchmark(args.benchmark, dest, mirror_dir(params), include_optional)
    for entry in manifest["files"]:
        print(f"{entry['sha256'][:12]}  {entry['bytes']:>11,}  {entry['file']}  <- {entry['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
