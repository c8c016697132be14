"""Reading `params.yaml`: the single source of every seed, subset size and hyper-parameter, validated against
`kepitfalls.config` before a stage does anything else, so a typo stops it instead of changing the experiment."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

if TYPE_CHECKING:  # the schema imports every method and suite (torch): only load_params needs it
    from kepitfalls.config import Params

#: The checkout this code belongs to; $KEPITFALLS_PROJECT_ROOT where the package was shipped elsewhere (Ray actors).
PROJECT_ROOT = Path(os.environ.get("KEPITFALLS_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
PARAMS_FILE = "params.yaml"
#: Keys DVC's run-cache leaves out of a stage's signature at any depth (treeverse/dvc#10296, unfixed in
#: DVC 3.67): changing such a param would silently restore the previous run's outputs.
RUN_CACHE_BLIND_KEYS = ("size", "nfiles")
Model = TypeVar("Model", bound=BaseModel)


class ParamsError(ValueError):
    """params.yaml does not match its schema; the message names every offending key and what was expected."""


def load_params(path: Path | str | None = None) -> Params:
    """Load and validate the project's params.yaml (or another file with the same layout)."""
    from kepitfalls.config import Params

    return _validated(Params, path)


def load_sections(sections: dict[str, type[BaseModel]], path: Path | str | None = None) -> BaseModel:
    """Only the named top-level sections of params.yaml, each validated against its schema (the rest ignored).

    For the stages that load no model (download, general-score): the whole schema imports every method and
    suite module, torch with them, which costs seconds per stage. The `params` stage, which every stage
    depends on, has validated the whole file before any of them runs.
    """
    schema = create_model("Sections", __config__=ConfigDict(extra="ignore", frozen=True), **{k: (v, ...) for k, v in sections.items()})
    return _validated(schema, path)


def _validated(schema: type[Model], path: Path | str | None) -> Model:
    """params.yaml (or `path`) validated against `schema`; every problem named by its key."""
    path = Path(path) if path is not None else PROJECT_ROOT / PARAMS_FILE
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    blind = _blind_keys(params)
    if blind:
        raise ParamsError(
            f"{path}: {', '.join(blind)}: DVC's run-cache ignores params named {' or '.join(RUN_CACHE_BLIND_KEYS)} "
            "(treeverse/dvc#10296), so changing one would silently check out the old outputs; rename it "
            "(subset sizes are `subset_size`)"
        )
    try:
        return schema.model_validate(params)
    except ValidationError as error:
        raise ParamsError(f"{path} is not valid:\n" + "\n".join(_describe(error, schema))) from None


def _describe(error: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One line per error: the dotted key, then what was wrong and what was expected."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            expected = _section_at(schema, item["loc"][:-1])
            what = "unknown key" + (f" (expected one of: {', '.join(expected.model_fields)})" if expected else "")
        elif item["type"] == "missing":
            what = "missing key"
        elif item["type"] == "cross_check":
            lines.append(item["msg"])
            continue
        elif isinstance(item["input"], dict):
            what = item["msg"]
        else:
            what = f"{item['msg']}, got {item['input']!r}"
        lines.append(f"{key}: {what}")
    return lines


def _section_at(node: Any, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class at a dotted location (through dicts, lists and optionals), if there is one."""
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return None
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) in (dict, list):
            node = typing.get_args(node)[-1]
        else:
            return None
    node = _unwrap(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(node: Any) -> Any:
    """`X | None` -> X."""
    args = [a for a in typing.get_args(node) if a is not type(None)]
    return args[0] if typing.get_origin(node) in (typing.Union, type(int | None)) and len(args) == 1 else node


def _blind_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key named in RUN_CACHE_BLIND_KEYS."""
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key in RUN_CACHE_BLIND_KEYS:
            found.append(path)
        found.extend(_blind_keys(value, path + "."))
    return found


def mirror_dir(params: Params) -> Path | None:
    """The local benchmark mirror: $KEPITFALLS_MIRROR, else `data.mirror` (relative to the project root).

    A mirror is laid out like `../shared/benchmarks`; files it holds are taken from it (and still checked
    against their sha256), files it lacks are downloaded from their public URL. A mirror that does not exist
    is an error naming where it was set (a typo must not silently turn into downloads); null means none.
    """
    source = "$KEPITFALLS_MIRROR" if os.environ.get("KEPITFALLS_MIRROR") else "params.yaml data.mirror"
    raw = os.environ.get("KEPITFALLS_MIRROR") or params.data.mirror or ""
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not path.is_dir():
        raise ParamsError(f"{source} = {raw!r}: the benchmark mirror {path} does not exist (set data.mirror: null to download)")
    return path
