"""The `data` section of params.yaml: where benchmarks come from and which optional files to fetch. Apart from
`kepitfalls.config` so that the download stages validate it without importing model code."""

from __future__ import annotations

from kepitfalls.schema import Section


class Benchmark(Section):
    include_optional: bool


class Data(Section):
    """`mirror`: a local folder laid out like ../shared/benchmarks (null: public URLs only)."""

    mirror: str | None
    benchmarks: dict[str, Benchmark]
