"""The `kepitfalls` command: look at what the project knows, edit one fact, and run single steps outside DVC.

Only click and the name registries are imported here: torch and transformers load inside the commands that
need them, so that `kepitfalls --help` and `--version` answer at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from kepitfalls import __version__
from kepitfalls.data.registry import benchmark_names, get_benchmark
from kepitfalls.methods import SUPPORTED as SUPPORTED_METHODS
from kepitfalls.models.registry import MODELS, identity
from kepitfalls.suites import SUPPORTED as SUPPORTED_SUITES


@click.group()
@click.version_option(__version__, prog_name="kepitfalls")
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


@main.command()
@click.option("--method", type=click.Choice(list(SUPPORTED_METHODS)), required=True)
@click.option("--prompt", required=True, help='the fact\'s prompt, "{}" marking the subject')
@click.option("--subject", required=True)
@click.option("--target", "target_new", required=True, help="the new object")
@click.option("--true", "target_true", default=None, help="the old object, to see its probability fall")
@click.option("--paraphrase", "paraphrases", multiple=True, help="a rephrased prompt (repeatable)")
@click.option("--neighbour", "neighbours", multiple=True, help="a prompt about another subject (repeatable)")
@click.option("--model", default=None, help="default: params.yaml `model`")
@click.option("--params", "params_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="default: the project's params.yaml (hyper-parameters and seeds)")
@click.option("--tokens", default=10, show_default=True, help="greedy continuation length")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def edit(method: str, prompt: str, subject: str, target_new: str, target_true: str | None, paraphrases: tuple[str, ...],
         neighbours: tuple[str, ...], model: str | None, params_file: Path | None, tokens: int, as_json: bool) -> None:
    """Edit one fact with a method and show the model before and after (then revert).

    Uses models/<model>/ and the method's templates and statistics; where these are missing for the
    project's own model, `dvc repro` builds them with the pipeline's stages first.
    """
    import json

    from kepitfalls import before_after
    from kepitfalls.params import load_params
    from kepitfalls.runtime import configure, load_current_model

    try:
        request = before_after.checked_request(prompt, subject, target_new, target_true)
    except before_after.InvalidRequestError as error:
        raise click.BadParameter(str(error), param_hint="--prompt/--subject/--target") from None
    params = load_params(params_file)
    may_build = params_file is None and model in (None, params.model)
    if model is not None:
        params = params.model_copy(update={"model": model})
    configure(params)
    prepared = before_after.prepared_method(params, method, may_build)
    summary = before_after.edit_before_after(
        load_current_model(params), prepared, request, list(paraphrases), list(neighbours), tokens
    )
    click.echo(json.dumps(summary, ensure_ascii=False) if as_json else before_after.as_text(summary))


@main.command("materialize")
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="default: models/<key>")
def materialize_command(name: str, out: Path | None) -> None:
    """Convert a model to float safetensors + tokenizer (what the `model` stage does).

    NAME: a named model (`kepitfalls models`), a Hugging Face hub id (org/name) or a local directory (./dir).
    """
    from kepitfalls import layout
    from kepitfalls.models.materialize import materialize

    click.echo(materialize(name, out or layout.model_dir(name)))


@main.command()
@click.argument("benchmark", type=click.Choice(benchmark_names()))
@click.option("--mirror", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None)
@click.option("--include-optional", is_flag=True)
def fetch(benchmark: str, mirror: Path | None, include_optional: bool) -> None:
    """Fetch one benchmark into data/raw/<benchmark> (what the `download` stage does)."""
    from kepitfalls import layout
    from kepitfalls.data.download import fetch_benchmark
    from kepitfalls.params import load_params, mirror_dir

    manifest = fetch_benchmark(benchmark, layout.raw_root() / benchmark, mirror or mirror_dir(load_params()), include_optional)
    click.echo(f"{len(manifest['files'])} files")
