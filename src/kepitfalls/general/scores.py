"""Scoring the stored Figure-4 outputs: tidy rows (one per method, mode, edit count, task, scorer and metric,
with n and a 95% interval) and the flat metrics `dvc metrics diff` compares.

Intervals as everywhere in the project (`stats.intervals`): Clopper–Pearson where every value is a yes/no
outcome, a seeded percentile bootstrap over examples (sentences, windows) otherwise. Every point after the
unedited one also carries its paired change from the unedited point (`change`, with a bootstrap interval that
resamples the same examples before and after): the tasks, sentences and windows are the same at every
point, so the change is what a finding about degradation reads, not two intervals side by side.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kepitfalls.general.generated import Generation
from kepitfalls.general.names import ME_PPL, SCORERS, WIKITEXT
from kepitfalls.general.scorers import scorer_module
from kepitfalls.general.tasks import Example
from kepitfalls.report.settings import Bootstrap
from kepitfalls.stats.intervals import bootstrap, clopper_pearson

COLUMNS = ("method", "mode", "edits", "task", "scorer", "metric", "value", "n", "ci_low", "ci_high", "change", "change_low", "change_high")
#: The change columns of a row with nothing to compare with (the unedited point, a diagnostic).
NO_CHANGE = {"change": None, "change_low": None, "change_high": None}
SIGNIFICANT_DIGITS = 6


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def summary(
    values: Sequence[float], binary: bool, resampling: Bootstrap, statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    base: Sequence[float] | None = None,
) -> dict[str, float | None]:
    """value, n and the 95% interval of the mean of `values` (or of `statistic` over resampled rows); with
    `base` (the same examples before the edits), the paired change and its bootstrap interval."""
    array = np.asarray(values, dtype=float)
    of = statistic or (lambda rows: rows.mean(axis=-1))
    value = float(of(array[None, :])[0])
    if binary:
        low, high = clopper_pearson(int(array.sum()), len(array))
    else:
        low, high = bootstrap(lambda idx: of(array[idx]), len(array), resampling.resamples, resampling.seed)
    found: dict[str, float | None] = {"value": _rounded(value), "n": len(array), "ci_low": _rounded(low), "ci_high": _rounded(high), **NO_CHANGE}
    if base is not None:
        before = np.asarray(base, dtype=float)
        if before.shape != array.shape:
            raise ValueError(f"the unedited point has {len(before)} examples and this one {len(array)}: not the same examples")
        with np.errstate(invalid="ignore"):  # a collapsed model's infinite perplexity makes inf - inf in a resample
            change = value - float(of(before[None, :])[0])
            low, high = bootstrap(lambda idx: of(array[idx]) - of(before[idx]), len(array), resampling.resamples, resampling.seed)
        found.update({"change": _rounded(change), "change_low": _rounded(low), "change_high": _rounded(high)})
    return found


def _task_values(task: str, stored: Sequence[dict[str, Any]]) -> dict[tuple[str, str], tuple[list[float], bool]]:
    """(scorer, metric) → (per-example values, whether they are yes/no), scored from the stored generations."""
    items = [Example(row["id"], "", tuple(row["refs"])) for row in stored]
    generations = [Generation(row["new"], row["full"]) for row in stored]
    found = {}
    for scorer_name in SCORERS:
        scorer = scorer_module(task).SCORERS[scorer_name]
        values = scorer.score(items, generations)
        found.update({(scorer_name, metric): (values[metric], scorer.binary) for metric in scorer.metrics})
    return found


def task_rows(point: dict[str, Any], resampling: Bootstrap, base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every task's every scorer and metric at one checkpoint, from its stored generations (with `base`, the
    unedited point, their paired changes); the installed components' diagnostics on its prompts (scorer
    `diagnostic`, e.g. the share of prompts a codebook fires on)."""
    rows = []
    for task, stored in sorted(point["tasks"].items()):
        before = None
        if base is not None:
            ids, base_ids = [row["id"] for row in stored], [row["id"] for row in base["tasks"][task]]
            if ids != base_ids:
                raise ValueError(f"{task}: the examples differ from the unedited point's, so no paired change")
            before = _task_values(task, base["tasks"][task])
        for (scorer_name, metric), (values, binary) in _task_values(task, stored).items():
            paired = before[(scorer_name, metric)][0] if before is not None else None
            rows.append({"task": task, "scorer": scorer_name, "metric": metric, **summary(values, binary, resampling, base=paired)})
    for task, quantities in sorted(point["diagnostics"].items()):
        rows.extend({"task": task, "scorer": "diagnostic", "metric": quantity, **summary(values, False, resampling)}
                    for quantity, values in sorted(quantities.items()))
    nll = np.asarray(point["wikitext_nll"])
    base_nll = np.asarray(base["wikitext_nll"]) if base is not None else None
    rows.append({"task": WIKITEXT, "scorer": "test", "metric": "perplexity",
                 **summary(nll, False, resampling, lambda r: np.exp(r.mean(axis=-1)), base=base_nll)})
    return rows


def perplexity_rows(perplexities: Sequence[float], resampling: Bootstrap, base: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Yang et al.'s mean of per-sentence perplexities, and their median (outliers dominate the mean); with
    `base` (the unedited model's, same sentences), their paired changes."""
    return [
        {"task": ME_PPL, "scorer": "yang", "metric": "mean", **summary(perplexities, False, resampling, base=base)},
        {"task": ME_PPL, "scorer": "yang", "metric": "median",
         **summary(perplexities, False, resampling, lambda r: np.median(r, axis=-1), base=base)},
    ]


def run_rows(method: str, mode: str, unedited: dict[str, Any], run: dict[str, Any], resampling: Bootstrap) -> list[dict[str, Any]]:
    """The tidy rows of one line: the unedited point (n = 0), then the run's checkpoints and ME-PPL trace."""
    if run["model"] != unedited["model"]:
        raise ValueError(f"{method} {mode}: the run is of model {run['model']}, the unedited outputs of {unedited['model']}")
    points = {0: unedited["checkpoints"]["0"], **{int(n): p for n, p in run["checkpoints"].items()}}
    trace = {0: unedited["me_ppl"]["0"], **{int(n): p for n, p in run["me_ppl"].items()}}
    rows = []
    for edits, point in sorted(points.items()):
        base = points[0] if edits else None
        rows.extend({"method": method, "mode": mode, "edits": edits, **row} for row in task_rows(point, resampling, base))
    for edits, values in sorted(trace.items()):
        base = trace[0] if edits else None
        rows.extend({"method": method, "mode": mode, "edits": edits, **row} for row in perplexity_rows(values, resampling, base))
    return [{column: row[column] for column in COLUMNS} for row in rows]


def flat_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """`<mode>_<edits>_<task>_<scorer>_<metric>` → value, and `..._n` → examples."""
    metrics: dict[str, float] = {}
    for row in rows:
        name = f"{row['mode']}_{row['edits']:03d}_{row['task']}_{row['scorer']}_{row['metric']}"
        metrics[name] = row["value"]
        metrics[f"{name}_n"] = float(row["n"])
    return metrics
