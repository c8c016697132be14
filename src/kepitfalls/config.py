"""The typed schema of params.yaml: the pipeline's own sections, and the checks that span sections.

Each method's `methods.<METHOD>.<model>` schema lives beside the method (`EditMethod.hparams_type`) and each
suite's `suites.<suite>` schema in its module (`Config`), so adding either stays one file. Values live only in
params.yaml: no key here has a default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, NonNegativeInt, PositiveInt, create_model, model_validator
from pydantic_core import PydanticCustomError

from kepitfalls.data.settings import Benchmark, Data
from kepitfalls.general.config import General
from kepitfalls.methods import SUPPORTED as METHODS, method_class
from kepitfalls.methods.base import Hparams
from kepitfalls.models.registry import known_depth, model_key
from kepitfalls.report.settings import ReportOptions
from kepitfalls.schema import LAYER, Section, Seed
from kepitfalls.suites import SUPPORTED as SUITES, suite_module
from kepitfalls.suites.common import SuiteConfig


def _model(value: str) -> str:
    try:
        model_key(value)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return value


#: A named model, a hub id or a local directory (`kepitfalls.models.registry`).
ModelName = Annotated[str, AfterValidator(_model)]
#: What `methods.<METHOD>` blocks are keyed by: `registry.model_key` (a hub id as it is, a directory's name).
ModelKey = str
MethodName = Literal[tuple(METHODS)]
SuiteName = Literal[tuple(SUITES)]


class Runtime(Section):
    """How a stage runs (speed and placement), not what it computes; `device` null is the model's default,
    `workers` null the CPUs the stage may use."""

    threads: PositiveInt
    workers: PositiveInt | None
    engine: Literal["local", "ray"]
    device: str | None


class TemplateRecipe(Section):
    """One method's context templates: for each [length, count] of `recipe`, count // len(prompts) samples per
    prompt of `length` tokens counting the prompt, top-`top_k` sampled."""

    prompts: list[str]
    recipe: list[tuple[PositiveInt, PositiveInt]]
    top_k: PositiveInt
    seed: Seed

    @model_validator(mode="after")
    def _every_entry_samples(self) -> TemplateRecipe:
        if self.recipe and not self.prompts:
            raise PydanticCustomError("recipe", "a recipe needs at least one prompt to sample from")
        for length, count in self.recipe:
            if count < len(self.prompts):
                raise PydanticCustomError(
                    "recipe", "recipe entry [{length}, {count}] yields no template: count must be at least the "
                    "number of prompts ({prompts})", {"length": length, "count": count, "prompts": len(self.prompts)},
                )
        return self


class Corpus(Section):
    """The text the second moments are estimated on; `batch_size` and `start_text` serve self-sampling only."""

    name: Literal["wikitext2", "self-sampled", "wikipedia"]
    tokens: PositiveInt
    length: Annotated[int, Field(ge=2)]
    seed: Seed
    batch_size: PositiveInt
    start_text: str


class Stats(Section):
    """C = E[k kᵀ] at `layers` of the current model, for ROME's and MEMIT's `mom2_adjustment`."""

    layers: Annotated[list[NonNegativeInt], LAYER, Field(min_length=1)]
    batch_size: PositiveInt
    shards: PositiveInt
    dtype: Literal["float32", "float64"]
    corpus: Corpus


class Report(ReportOptions):
    """Which cells the pipeline runs (every method × every suite) and the tables show; `min_n` and `bootstrap`
    as `kepitfalls.report.settings` reads them, with methods and suites checked against those implemented."""

    suites: Annotated[list[SuiteName], Field(min_length=1)]
    methods: Annotated[list[MethodName], Field(min_length=1)]


#: `methods.<METHOD>`: per model key, the method's own schema.
Methods = create_model(
    "Methods", __base__=Section, **{name: (dict[ModelKey, method_class(name).hparams_type], ...) for name in METHODS}
)
#: `templates.<METHOD>`: every method's context-template recipe.
Templates = create_model("Templates", __base__=Section, **{name: (TemplateRecipe, ...) for name in METHODS})
#: `suites.<suite>`: each suite's own schema. A suite left out has no select/pre stages (dvc.yaml loops over
#: the blocks present), so a block may be absent, though not while `report.suites` runs it.
Suites = create_model("Suites", __base__=Section, **{name: (suite_module(name).Config | None, None) for name in SUITES})


class Params(Section):
    """The whole of params.yaml, validated; `model_dtype` null runs the model in its reference dtype."""

    seed: Seed
    model: ModelName
    model_dtype: Literal["float32", "float16", "bfloat16"] | None
    runtime: Runtime
    data: Data
    templates: Templates
    stats: Stats
    suites: Suites
    methods: Methods
    report: Report
    general: General

    @property
    def model_key(self) -> str:
        """The current model's key in `methods.<METHOD>` and under models/ (`registry.model_key`)."""
        return model_key(self.model)

    def hparams(self, method: str) -> Hparams:
        """The method's hyper-parameters for the current model."""
        if method not in METHODS:
            raise KeyError(f"unknown method {method!r}; params.yaml has: {', '.join(METHODS)}")
        per_model = getattr(self.methods, method)
        if self.model_key not in per_model:
            raise KeyError(f"params.yaml has no methods.{method}.{self.model_key} hyper-parameters")
        return per_model[self.model_key]

    def suite(self, name: str) -> SuiteConfig:
        """The suite's `suites.<name>` block."""
        if name not in SUITES:
            raise KeyError(f"unknown suite {name!r}; implemented: {', '.join(SUITES)}")
        config = getattr(self.suites, name)
        if config is None:
            raise KeyError(f"params.yaml has no suites.{name} block")
        return config

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        problems = [*self._layer_problems(), *self._stats_problems()]
        problems.extend(f"report.suites: {s} has no suites.{s} block" for s in self.report.suites if getattr(self.suites, s) is None)
        if problems:
            raise PydanticCustomError("cross_check", "{problems}", {"problems": "\n".join(problems)})
        return self

    def _layer_problems(self) -> list[str]:
        """Every layer index within the depth of the model it is for."""
        sections = [(f"methods.{m}.{model}", model, h) for m in METHODS for model, h in getattr(self.methods, m).items()]
        sections.append(("stats", self.model_key, self.stats))
        problems = []
        for where, model, section in sections:
            depth = known_depth(model)
            for name, values in section.layer_indices().items():
                problems.extend(
                    f"{where}.{name}: layer {value} does not exist in {model}: expected 0..{depth - 1} "
                    f"(or -{depth}..-1 counted from the end, where negative indices are allowed)"
                    for value in values
                    if depth is not None and not -depth <= value < depth
                )
        return problems

    def _stats_problems(self) -> list[str]:
        """Every method the report runs has hyper-parameters for the model, and statistics for its layers."""
        problems = []
        key = self.model_key
        for method in dict.fromkeys([*self.report.methods, *self.general.methods, *self.general.batch_methods]):
            per_model = getattr(self.methods, method)
            if key not in per_model:
                problems.append(f"methods.{method}.{key}: missing (report.methods or general runs {method} on {self.model})")
                continue
            missing = sorted(set(per_model[key].stats_layers()) - set(self.stats.layers))
            if missing:
                problems.append(f"stats.layers: missing {missing}, which methods.{method}.{key} reads (mom2_adjustment)")
        return problems
