"""Scoring the stored Figure-4 outputs: tidy rows (one per method, mode, edit count, task, scorer and metric,
with n and a 95% interval) and the flat metrics `dvc metrics diff` compares.

Intervals as everywhere in the project (`stats.intervals`): Clopper–Pearson where every value is a yes/no
outcome, a seeded percentile bootstrap over examples (sentences, windows) otherwise.
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

COLUMNS = ("method", "mode", "edits", "task", "scorer", "metric", "value", "n", "ci_low", "ci_high")
SIGNIFICANT_DIGITS = 6


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def summary(values: Sequence[float], binary: bool, resampling: Bootstrap, statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """value, n and the 95% interval of the mean of `values` (or of `statistic` over resampled rows)."""
    array = np.asarray(values, dtype=float)
    of = statistic or (lambda rows: rows.mean(axis=-1))
    value = float(of(array[None, :])[0])
    if binary:
        low, high = clopper_pearson(int(array.sum()), len(array))
    else:
        low, high = bootstrap(lambda idx: of(array[idx]), len(array), resampling.resamples, resampling.seed)
    return {"value": _rounded(value), "n": len(array), "ci_low": _rounded(low), "ci_high": _rounded(high)}


def task_rows(point: dict[str, Any], resampling: Bootstrap) -> list[dict[str, Any]]:
    """Every task's every scorer and metric at one checkpoint, from its stored generations; the installed
    components' diagnostics on its prompts (scorer `diagnostic`, e.g. the share of prompts a codebook fires on)."""
    rows = []
    for task, stored in sorted(point["tasks"].items()):
        items = [Example(row["id"], "", tuple(row["refs"])) for row in stored]
        generations = [Generation(row["new"], row["full"]) for row in stored]
        for scorer_name in SCORERS:
            scorer = scorer_module(task).SCORERS[scorer_name]
            values = scorer.score(items, generations)
            for metric in scorer.metrics:
                rows.append({"task": task, "scorer": scorer_name, "metric": metric, **summary(values[metric], scorer.binary, resampling)})
    for task, quantities in sorted(point["diagnostics"].items()):
        rows.extend({"task": task, "scorer": "diagnostic", "metric": quantity, **summary(values, False, resampling)}
                    for quantity, values in sorted(quantities.items()))
    nll = np.asarray(point["wikitext_nll"])
    rows.append({"task": WIKITEXT, "scorer": "test", "metric": "perplexity",
                 **summary(nll, False, resampling, lambda r: np.exp(r.mean(axis=-1)))})
    return rows


def perplexity_rows(perplexities: Sequence[float], resampling: Bootstrap) -> list[dict[str, Any]]:
    """Yang et al.'s mean of per-sentence perplexities, and their median (outliers dominate the mean)."""
    return [
        {"task": ME_PPL, "scorer": "yang", "metric": "mean", **summary(perplexities, False, resampling)},
        {"task": ME_PPL, "scorer": "yang", "metric": "median",
         **summary(perplexities, False, resampling, lambda r: np.median(r, axis=-1))},
    ]


def run_rows(method: str, mode: str, unedited: dict[str, Any], run: dict[str, Any], resampling: Bootstrap) -> list[dict[str, Any]]:
    """The tidy rows of one line: the unedited point (n = 0), then the run's checkpoints and ME-PPL trace."""
    if run["model"] != unedited["model"]:
        raise ValueError(f"{method} {mode}: the run is of model {run['model']}, the unedited outputs of {unedited['model']}")
    points = {0: unedited["checkpoints"]["0"], **{int(n): p for n, p in run["checkpoints"].items()}}
    trace = {0: unedited["me_ppl"]["0"], **{int(n): p for n, p in run["me_ppl"].items()}}
    rows = []
    for edits, point in sorted(points.items()):
        rows.extend({"method": method, "mode": mode, "edits": edits, **row} for row in task_rows(point, resampling))
    for edits, values in sorted(trace.items()):
        rows.extend({"method": method, "mode": mode, "edits": edits, **row} for row in perplexity_rows(values, resampling))
    return [{column: row[column] for column in COLUMNS} for row in rows]


def flat_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """`<mode>_<edits>_<task>_<scorer>_<metric>` → value, and `..._n` → examples."""
    metrics: dict[str, float] = {}
    for row in rows:
        name = f"{row['mode']}_{row['edits']:03d}_{row['task']}_{row['scorer']}_{row['metric']}"
        metrics[name] = row["value"]
        metrics[f"{name}_n"] = float(row["n"])
    return metrics
