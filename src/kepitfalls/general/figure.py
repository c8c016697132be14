"""Figure 4 as a picture: one panel per task and scorer, x = edits, one line per method and mode (ours
solid, batch dash-dotted), the survey's curves dashed beside them, and the perplexity panels."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import yaml
from pydantic import BaseModel, ConfigDict

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kepitfalls.atomic import write_text  # noqa: E402
from kepitfalls.general import findings  # noqa: E402
from kepitfalls.general.names import MAIN, ME_PPL, SCORERS, TASKS, WIKITEXT  # noqa: E402

TITLES = {"nq": "NQ (exact match)", "sst2": "SST-2 (accuracy)", "gsm8k": "GSM8K (solve rate)", "samsum": "SAMSum (mean ROUGE F1)"}
SCORER_LABELS = {"gu": "Gu et al.'s scoring", "clean": "clean scoring"}
NOTE = (
    "solid: this run ({model}); dash-dotted: batch mode; dashed: the survey (GPT-J, Gu et al.'s protocol), read off\n"
    "the published plot, approximate. Gu et al.'s released code applies only the first ROME request at every n\n"
    "(an `if i == 0` guard) and runs 'batch' MEMIT/MEND one edit at a time; neither is reproduced here."
)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The tidy rows with their numbers parsed; a change column left empty (the unedited point) is None."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [
            {**row, "edits": int(row["edits"]), "n": int(row["n"]), **{k: float(row[k]) for k in ("value", "ci_low", "ci_high")},
             **{k: float(row[k]) if row[k] != "" else None for k in ("change", "change_low", "change_high")}}
            for row in csv.DictReader(handle)
        ]


def read_survey(path: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(task, method) → [(edits, value)] from the survey's wide CSV (`edits_<n>` columns)."""
    with open(path, encoding="utf-8", newline="") as handle:
        wide = list(csv.DictReader(handle))
    curves = {}
    for row in wide:
        points = [(int(key.split("_")[1]), float(value)) for key, value in row.items() if key.startswith("edits_")]
        curves[(row["task"], row["method"])] = sorted(points)
    return curves


def _lines(rows: Sequence[dict[str, Any]], task: str, scorer: str, metric: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if (row["task"], row["scorer"], row["metric"]) == (task, scorer, metric):
            lines[(row["method"], row["mode"])].append((row["edits"], row["value"]))
    return {key: sorted(points) for key, points in sorted(lines.items())}


def draw(rows: Sequence[dict[str, Any]], survey: dict[tuple[str, str], list[tuple[int, float]]], model: str, png: Path, svg: Path) -> None:
    """Write the figure as PNG and SVG (no dates or random ids in the SVG, so equal inputs give equal bytes)."""
    methods = list(dict.fromkeys([r["method"] for r in rows] + [method for _, method in survey]))
    colour = {method: plt.get_cmap("tab10")(i % 10) for i, method in enumerate(methods)}
    ours = {r["method"] for r in rows}
    plt.rcParams["svg.hashsalt"] = "kepitfalls-figure4"
    figure, axes = plt.subplots(3, len(TASKS), figsize=(4.2 * len(TASKS), 11), squeeze=False)
    for row_index, scorer in enumerate(SCORERS):
        for column, task in enumerate(TASKS):
            axis = axes[row_index][column]
            for (method, mode), points in _lines(rows, task, scorer, MAIN[task]).items():
                axis.plot(*zip(*points), "-" if mode == "sequential" else "-.", marker="o", color=colour[method],
                          label=method if mode == "sequential" else f"{method} ({mode})")
            if scorer == "gu":
                for (survey_task, method), points in survey.items():
                    if survey_task == task and method in ours:
                        axis.plot(*zip(*points), "--", color=colour[method], alpha=0.6, label=f"{method} (survey)")
            axis.set_title(f"{TITLES[task]}\n{SCORER_LABELS[scorer]}", fontsize=9)
            axis.set_xlabel("edits")
            axis.set_ylim(-0.03, 1.03)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    panels = [(ME_PPL, "yang", "mean", "ME-PPL: mean per-sentence perplexity"),
              (ME_PPL, "yang", "median", "ME-PPL: median per-sentence perplexity"),
              (WIKITEXT, "test", "perplexity", "WikiText-2 test perplexity")]
    for column, (task, scorer, metric, title) in enumerate(panels):
        axis = axes[2][column]
        for (method, mode), points in _lines(rows, task, scorer, metric).items():
            axis.plot(*zip(*points), "-" if mode == "sequential" else "-.", marker=".", color=colour[method], label=method)
        axis.set_yscale("log")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("edits")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend = axes[2][len(panels)]
    legend.axis("off")
    entries: dict[str, Any] = {}  # every line of every task panel, once
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    legend.legend(entries.values(), entries.keys(), loc="upper left", fontsize=8, frameon=False)
    figure.text(0.01, 0.005, NOTE.format(model=model), fontsize=8, va="bottom")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110, metadata={"Software": None})
    figure.savefig(svg, metadata={"Date": None, "Creator": None})
    plt.close(figure)


class _GeneralMethods(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    methods: list[str]


class _MinN(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    min_n: int


class _FigureParams(BaseModel):
    """The parts of params.yaml the figure reads (the report stage validates no more than it uses)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    general: _GeneralMethods
    report: _MinN


def render(params_file: Path, plots_dir: Path, reference_dir: Path, out_dir: Path) -> Path:
    """reports/figure4.png and .svg from the tidy CSV of every method in `general.methods`, and the survey's
    Figure-4 findings tested on them (reports/figure4.md)."""
    params = _FigureParams.model_validate(yaml.safe_load(params_file.read_text(encoding="utf-8")))
    rows = []
    for method in params.general.methods:
        path = plots_dir / f"{method}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no Figure-4 scores for {method} (general.methods); run `dvc repro general-score@{method}`")
        rows.extend(read_rows(path))
    draw(rows, read_survey(reference_dir / "survey_figure4.csv"), params.model, out_dir / "figure4.png", out_dir / "figure4.svg")
    claims = findings.load(reference_dir / "figure4_findings.yaml")
    write_text(out_dir / "figure4.md", findings.to_markdown(claims, rows, params.model, params.report.min_n))
    return out_dir / "figure4.png"
