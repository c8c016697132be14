"""Running a method over a suite: store one delta per case (the edit stage), then score them (evaluate)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kepitfalls import layout
from kepitfalls.atomic import write_json
from kepitfalls.config import Params
from kepitfalls.data.checksum import hash_file
from kepitfalls.deltas.codecs import Delta
from kepitfalls.deltas.store import DeltaStore, delta_key
from kepitfalls.methods import method_class
from kepitfalls.methods.base import Artifacts, EditMethod
from kepitfalls.metrics.records import Evaluation, by_metric, statistic
from kepitfalls.models.loading import LoadedModel
from kepitfalls.scoring.router import Router, installed, routing_metrics
from kepitfalls.suites import suite_module
from kepitfalls.suites.common import EditCase, PreScores, applied, chain, check_cases, load_pre, load_records, save_pre
from kepitfalls.workers import Loader, map_cases

#: The shared code every method's deltas depend on (besides the method's own module and its `own_sources`),
#: relative to the package. tests/test_structure.py checks that it covers every module the methods import,
#: but those in NO_DELTA_SOURCES.
CORE_SOURCES = (
    "methods/base.py",
    "requests.py",
    "tokens.py",
    "hidden/hooks.py",
    "hidden/partial.py",
    "hidden/suffix.py",
    "hidden/value.py",
    "prepare/stats.py",
    "models/adapters.py",
    "deltas/codecs.py",
    "deltas/codebook.py",
    "deltas/composed.py",
    "scoring/diagnostics.py",
)
#: Modules the methods import that compute no part of a delta: loading and writing files, configuration,
#: progress bars, the memory methods' routing at scoring time, the data read only by `prepare` (whose output
#: reaches the delta keys as an upstream file) and the check of the encoder's pinned files.
NO_DELTA_SOURCES = (
    "atomic.py",
    "tensorfile.py",
    "schema.py",
    "layout.py",
    "progress.py",
    "models/loading.py",
    "scoring/router.py",
    "data/zsre.py",
    "data/checksum.py",
)
INDEX = "index.json"
SIGNIFICANT_DIGITS = 6


class StaleDeltasError(RuntimeError):
    """The stored deltas were computed for another method, other hyper-parameters or other requests."""


def code_fingerprint(method: EditMethod) -> str:
    """sha256 over the source of the method's module and the shared editing core it runs on.

    Part of every delta key, so a persisted delta is never reused after the code that made it changed.
    """
    package = Path(__file__).resolve().parent
    files = [Path(inspect.getfile(type(method)))] + [package / name for name in (*CORE_SOURCES, *method.own_sources)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_method(params: Params, name: str) -> EditMethod:
    """The method with its hyper-parameters for the current model and its upstream artifacts."""
    artifacts = Artifacts(
        templates_file=layout.templates_file(params.model, name),
        stats_dir=layout.stats_dir(params.model),
        method_dir=layout.method_dir(params.model, name),
    )
    return method_class(name)(params.hparams(name), artifacts)


def delta_keys(lm: LoadedModel, method_name: str, method: EditMethod, cases: dict[str, EditCase]) -> dict[str, str]:
    """The content key of every case's delta under the current method, hyper-parameters and requests.

    A case with a `base` is computed with its base chain applied, so its key includes the base's key.
    """
    upstream = {path.name: hash_file(path).sha256 for path in method.upstream_files()}
    upstream["code"] = code_fingerprint(method)
    hparams = method.hparams.model_dump(mode="json")
    keys: dict[str, str] = {}
    for case_id, case in cases.items():
        requests = [dataclasses.asdict(r) for r in case.requests]
        base_key = keys[case.base] if case.base is not None else ""
        keys[case_id] = delta_key(lm.identity, method_name, hparams, requests, {**upstream, "base": base_key})
    return keys


def suite_cases(suite: str, records: list[Any]) -> dict[str, EditCase]:
    """The suite's edit cases over its selected records, by case id, every request checked (`check_cases`)."""
    cases = {case.case_id: case for case in suite_module(suite).edit_cases(records)}
    check_cases(suite, cases.values())
    return cases


def _edit_group(method: EditMethod, out_dir: Path, lm: LoadedModel, group: list[tuple[str, EditCase, str]]) -> dict[str, float | None]:
    """Compute (or reuse) the deltas of one chain of cases (a case, then those computed on top of it), in
    order, storing each; the seconds each computed edit took, None for a reused one."""
    store = DeltaStore(out_dir)
    deltas: dict[str, Delta] = {}
    seconds: dict[str, float | None] = {}
    cases = {case_id: case for case_id, case, _ in group}
    for case_id, case, key in group:
        stored = store.reuse(key)
        if stored is not None:
            deltas[case_id], seconds[case_id] = stored, None
            continue
        with applied(lm, deltas, chain(cases, case_id)[:-1]):
            started = time.perf_counter()
            deltas[case_id] = method.edit(lm, list(case.requests))
            seconds[case_id] = time.perf_counter() - started
        store.put(key, deltas[case_id])
    return seconds


def _groups(cases: dict[str, EditCase], keys: dict[str, str]) -> list[list[tuple[str, EditCase, str]]]:
    """The cases grouped by the first case of their chain, in suite order: groups are independent of each other."""
    groups: dict[str, list[tuple[str, EditCase, str]]] = {}
    for case_id, case in cases.items():
        groups.setdefault(chain(cases, case_id)[0], []).append((case_id, case, keys[case_id]))
    return list(groups.values())


def edit_suite(
    lm: LoadedModel, params: Params, method_name: str, suite: str, out_dir: Path, workers: int = 1,
    loader: Loader | None = None, engine: str = "local",
) -> dict[str, Any]:
    """Compute (or reuse) the delta of every case of the suite (`store_deltas`)."""
    records = load_records(layout.suite_records(suite), suite_module(suite).RECORD_TYPE)
    cases = suite_cases(suite, records)
    return store_deltas(lm, method_name, build_method(params, method_name), cases, out_dir, {"suite": suite}, workers, loader, engine)


def store_deltas(
    lm: LoadedModel,
    method_name: str,
    method: EditMethod,
    cases: dict[str, EditCase],
    out_dir: Path,
    label: dict[str, Any],
    workers: int = 1,
    loader: Loader | None = None,
    engine: str = "local",
) -> dict[str, Any]:
    """Compute (or reuse) the delta of every case, each with its base chain applied; write the case → key
    index (with `label`) last, atomically.

    Chains of cases that need computing fan out over `workers` processes or Ray actors (`engine`; `loader`
    builds their model).
    Returns the run's statistics (computed, reused, seconds per edit); they stay out of `out_dir`, whose
    bytes must depend only on what the deltas were computed from.
    """
    keys = delta_keys(lm, method_name, method, cases)
    store = DeltaStore(out_dir)
    what = f"edit {method_name} on {' '.join(str(v) for v in label.values())}"
    stored = {case_id for case_id, key in keys.items() if store.reuse(key) is not None}
    print(f"{what}: {len(stored)} of {len(keys)} deltas already stored, reused", file=sys.stderr)
    todo = [group for group in _groups(cases, keys) if any(case_id not in stored for case_id, _, _ in group)]
    router = method.router()
    if router is not None:
        # A chain applies a memory method's earlier deltas, which only its router may read (`MemoryDelta.apply`
        # refuses a model without one): installed on this process's model, so its chains run here.
        workers = 1
    with installed(lm.model, router):
        runs = map_cases(lm, loader, partial(_edit_group, method, out_dir), todo, workers, what, lambda group: group[0][0], engine)
    seconds = [s for run in runs for s in run.values() if s is not None]
    index = {case_id: {"key": key, "base": cases[case_id].base, "bytes": store.path(key).stat().st_size} for case_id, key in keys.items()}
    store.prune(set(keys.values()))
    write_json(out_dir / INDEX, {"method": method_name, **label, "model": lm.identity, "cases": index})
    return {
        "computed": len(seconds),
        "reused": len(index) - len(seconds),
        "seconds_per_edit": sum(seconds) / len(seconds) if seconds else 0.0,
    }


class StoredDeltas(Mapping[str, Delta]):
    """The stored delta of every case, by case id, read when a case is scored: a worker reads only its own."""

    def __init__(self, out_dir: Path, keys: dict[str, str]) -> None:
        self.out_dir, self.keys = out_dir, keys

    def __getitem__(self, case_id: str) -> Delta:
        return DeltaStore(self.out_dir).get(self.keys[case_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def load_deltas(out_dir: Path, expected: dict[str, str] | None = None) -> StoredDeltas:
    """The stored delta of every case, by case id; with `expected` (case id → key), only if the index matches it.

    An edit stage killed after a hyper-parameter change leaves the previous run's index and deltas behind;
    scoring them would record the old method's numbers under the new parameters.
    """
    index = json.loads((out_dir / INDEX).read_text(encoding="utf-8"))
    stored = {case_id: entry["key"] for case_id, entry in index["cases"].items()}
    if expected is not None and stored != expected:
        stale = sorted(set(stored.items()) ^ set(expected.items()))
        cases = sorted({case_id for case_id, _ in stale})
        raise StaleDeltasError(
            f"{out_dir}: the stored deltas do not match the current method, hyper-parameters and requests "
            f"(cases {', '.join(cases[:5])}{' ...' if len(cases) > 5 else ''} differ); run the edit stage first"
        )
    return StoredDeltas(out_dir, stored)


def compute_pre(lm: LoadedModel, suite: str, out_dir: Path) -> None:
    """The suite's unedited-model scores, once per (model, suite, subset)."""
    module = suite_module(suite)
    records = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    save_pre(out_dir, module.pre_scores(lm, records))


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _score(suite: str, deltas: Mapping[str, Delta], pre: PreScores, lm: LoadedModel, record: Any) -> Any:
    return suite_module(suite).score(lm, record, deltas, pre)


def _score_routed(
    suite: str, deltas: Mapping[str, Delta], pre: PreScores, router: Router, lm: LoadedModel, record: Any
) -> tuple[Any, Counter[str], Counter[str]]:
    """A memory-based method's record, scored with its router installed on this process's model (a worker's
    copy of the router travels with the case function), and the routing counts of this record alone."""
    router.seen.clear()
    router.routed.clear()
    with installed(lm.model, router):
        scored = _score(suite, deltas, pre, lm, record)
    return scored, Counter(router.seen), Counter(router.routed)


def evaluate_suite(
    lm: LoadedModel, params: Params, method_name: str, suite: str, deltas_dir: Path, workers: int = 1,
    loader: Loader | None = None, engine: str = "local",
) -> Evaluation:
    """The suite's flat metrics for a method's stored deltas, to 6 significant digits so diffs show real changes,
    with `<name>_n` (records) for every metric that has per-record rows, and those rows; a memory-based
    method's router is installed while each record is scored, in whichever process scores it, and its
    counts (prompts seen and routed per primitive, summed over the records) join the metrics.

    Records are scored one by one (`score`, fanned out over `workers` processes or Ray actors, `engine`) and
    summarised together.

    Refuses deltas whose keys are not those the current method, hyper-parameters and requests give. A
    metric whose rows do not reproduce it is an error: intervals computed from them would describe another
    number than the one printed.
    """
    module = suite_module(suite)
    records = load_records(layout.suite_records(suite), module.RECORD_TYPE)
    method = build_method(params, method_name)
    expected = delta_keys(lm, method_name, method, suite_cases(suite, records))
    deltas, pre = load_deltas(deltas_dir, expected), load_pre(layout.pre_dir(suite))
    router = method.router()
    what = f"evaluate {method_name} on {suite}"
    if router is None:
        scores = map_cases(lm, loader, partial(_score, suite, deltas, pre), module.items(records), workers, what, engine=engine)
    else:
        routed = map_cases(lm, loader, partial(_score_routed, suite, deltas, pre, router), module.items(records), workers, what, engine=engine)
        scores = [scored for scored, _, _ in routed]
        router.seen.clear()
        router.routed.clear()
        for _, seen, hits in routed:  # `update`, not `+`: a primitive that saw 0 prompts keeps its 0
            router.seen.update(seen)
            router.routed.update(hits)
    result = module.summarise(lm, records, scores, pre)
    metrics = {name: _rounded(value) for name, value in result.metrics.items()} | routing_metrics(router)
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
