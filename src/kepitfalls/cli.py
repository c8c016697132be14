"""The `kepitfalls` command: look at what the project knows, and run single steps outside DVC."""

from __future__ import annotations

from pathlib import Path

import click

from kepitfalls import layout
from kepitfalls.data.download import fetch_benchmark
from kepitfalls.data.registry import benchmark_names, get_benchmark
from kepitfalls.methods import SUPPORTED as SUPPORTED_METHODS
from kepitfalls.models.materialize import materialize
from kepitfalls.models.registry import MODELS, identity
from kepitfalls.params import load_params, mirror_dir
from kepitfalls.suites import SUPPORTED as SUPPORTED_SUITES


@click.group()
def main() -> None:
    """Measure what knowledge editing breaks (the pipeline itself runs with `dvc repro`)."""


@main.command()
def models() -> None:
    """List the named models and their identities."""
    for spec in MODELS.values():
        click.echo(f"{spec.name:14} {spec.source:10} {spec.dtype:8} {spec.device:5} {identity(spec)}")


@main.command()
def methods() -> None:
    """List the editing methods implemented."""
    for name in SUPPORTED_METHODS:
        click.echo(name)


@main.command()
def suites() -> None:
    """List the suites implemented."""
    for name in SUPPORTED_SUITES:
        click.echo(name)


@main.command()
def benchmarks() -> None:
    """List the benchmarks with their files and public URLs."""
    for name in benchmark_names():
        click.echo(name)
        for spec in get_benchmark(name).files:
            flag = " (optional)" if spec.optional else ""
            click.echo(f"  {spec.relpath}{flag}\n    {spec.url}")


@main.command("materialize")
@click.argument("name", type=click.Choice(sorted(MODELS)))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="default: models/<name>")
def materialize_command(name: str, out: Path | None) -> None:
    """Convert a named model to float safetensors + tokenizer (what the `model` stage does)."""
    click.echo(materialize(name, out or layout.model_dir(name)))


@main.command()
@click.argument("benchmark", type=click.Choice(benchmark_names()))
@click.option("--mirror", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None)
@click.option("--include-optional", is_flag=True)
def fetch(benchmark: str, mirror: Path | None, include_optional: bool) -> None:
    """Fetch one benchmark into data/raw/<benchmark> (what the `download` stage does)."""
    manifest = fetch_benchmark(benchmark, layout.raw_root() / benchmark, mirror or mirror_dir(load_params()), include_optional)
    click.echo(f"{len(manifest['files'])} files")
