"""Running a method over a suite: store one delta per case (the edit stage), then score them (evaluate)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.config import Params
from kepitfalls.deltas.codecs import Delta
from kepitfalls.deltas.store import DeltaStore, delta_key
from kepitfalls.methods import method_class
from kepitfalls.methods.base import Artifacts, EditMethod
from kepitfalls.metrics.records import Evaluation, by_metric, statistic
from kepitfalls.models.loading import LoadedModel
from kepitfalls.suites import suite_module
from kepitfalls.suites.common import applied, chain, load_pre, load_records, save_pre

#: The shared code every method's deltas depend on (besides the method's own module).
CORE_SOURCES = (
    "methods/base.py",
    "methods/layers.py",
    "methods/stats.py",
    "methods/value.py",
    "models/adapters.py",
    "scoring/primitives.py",
    "deltas/codecs.py",
)
INDEX = "index.json"
TIMINGS = "timings.json"
SIGNIFICANT_DIGITS = 6


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_fingerprint(method: EditMethod) -> str:
    """sha256 over the source of the method's module and the shared editing core it runs on.

    Part of every delta key, so a persisted delta is never reused after the code that made it changed.
    """
    package = Path(__file__).resolve().parent
    files = [Path(inspect.getfile(type(method)))] + [package / name for name in CORE_SOURCES]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_method(params: Params, name: str) -> EditMethod:
    """The method with its hyper-parameters for the current model and its upstream artifacts."""
    artifacts = Artifacts(templates_file=layout.templates_file(params.model, name), stats_dir=layout.stats_dir(params.model))
    return method_class(name)(params.hparams(name), artifacts)


def edit_suite(lm: LoadedModel, params: Params, method_name: str, suite: str, out_dir: Path) -> dict[str, Any]:
    """Compute (or reuse) the delta of every case; write the case → key index last, atomically.

    A case with a `base` is computed with its base chain applied, and its key includes the base's key.
    """
    module = suite_module(suite)
    records = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    method = build_method(params, method_name)
    upstream = {path.name: _sha256(path) for path in method.upstream_files()}
    upstream["code"] = code_fingerprint(method)
    store = DeltaStore(out_dir)
    cases = {case.case_id: case for case in module.edit_cases(records)}
    index: dict[str, dict[str, Any]] = {}
    deltas: dict[str, Delta] = {}
    seconds: list[float] = []
    for case_id, case in cases.items():
        requests = [dataclasses.asdict(r) for r in case.requests]
        base_key = index[case.base]["key"] if case.base is not None else None
        key = delta_key(lm.identity, method_name, method.hparams.model_dump(mode="json"), requests, {**upstream, "base": base_key or ""})
        if store.has(key):
            deltas[case_id] = store.get(key)
        else:
            with applied(lm, deltas, chain(cases, case_id)[:-1]):
                started = time.perf_counter()
                deltas[case_id] = method.edit(lm, list(case.requests))
                seconds.append(time.perf_counter() - started)
            store.put(key, deltas[case_id])
        index[case_id] = {"key": key, "base": case.base, "bytes": store.path(key).stat().st_size}
    store.prune({entry["key"] for entry in index.values()})
    summary = {
        "computed": len(seconds),
        "reused": len(index) - len(seconds),
        "seconds_per_edit": sum(seconds) / len(seconds) if seconds else 0.0,
    }
    write_json(out_dir / TIMINGS, summary)
    write_json(out_dir / INDEX, {"method": method_name, "suite": suite, "model": lm.identity, "cases": index})
    return summary


def load_deltas(out_dir: Path) -> dict[str, Delta]:
    """The stored delta of every case, by case id."""
    index = json.loads((out_dir / INDEX).read_text(encoding="utf-8"))
    store = DeltaStore(out_dir)
    return {case_id: store.get(entry["key"]) for case_id, entry in index["cases"].items()}


def compute_pre(lm: LoadedModel, suite: str, out_dir: Path) -> None:
    """The suite's unedited-model scores, once per (model, suite, subset)."""
    module = suite_module(suite)
    records = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    save_pre(out_dir, module.pre_scores(lm, records))


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def evaluate_suite(lm: LoadedModel, method_name: str, suite: str, deltas_dir: Path) -> Evaluation:
    """The suite's flat metrics for a method's stored deltas, to 6 significant digits so diffs show real changes,
    with `<name>_n` (records) for every metric that has per-record rows, and those rows.

    A metric whose rows do not reproduce it is an error: intervals computed from them would describe
    another number than the one printed.
    """
    module = suite_module(suite)
    records = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    result = module.evaluate(lm, records, load_deltas(deltas_dir), load_pre(layout.pre_dir(suite)))
    metrics = {name: _rounded(value) for name, value in result.metrics.items()}
    for name, rows in by_metric(result.records).items():
        if name not in metrics or not math.isclose(statistic(rows), result.metrics[name], rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(f"{suite}: the per-record rows of {name} give {statistic(rows)}, the metric is {result.metrics.get(name)}")
        metrics[f"{name}_n"] = float(len(rows))
    return Evaluation(metrics, result.records)


def protocol(params: Params, method_name: str, suite: str, evaluation: Evaluation) -> dict[str, Any]:
    """What the report says about a cell group, so that it reads files only: the suite's protocol and
    subset, the model and statistics corpus, the method (with its own description where it has one) and
    each metric's kind of per-record value."""
    describe = getattr(sys.modules[method_class(method_name).__module__], "describe", None)
    corpus = params.stats.corpus
    return {
        "suite": suite,
        "protocol": suite_module(suite).PROTOCOL,
        "config": params.suite(suite).model_dump(mode="json"),
        "model": params.model,
        "model_dtype": params.model_dtype,
        "stats_corpus": {"name": corpus.name, "tokens": corpus.tokens},
        "method": {"name": method_name, "description": describe(params.hparams(method_name)) if describe else None},
        "kinds": {name: rows[0]["kind"] for name, rows in by_metric(evaluation.records).items()},
    }
