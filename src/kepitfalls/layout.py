"""Where every stage reads and writes, relative to the project root (one place, so stages agree).

A model's files go under its key (`registry.model_key`: a hub id as it is, a local directory's name).
"""

from __future__ import annotations

from pathlib import Path

from kepitfalls.models.registry import model_key
from kepitfalls.params import PROJECT_ROOT


def model_dir(model: str) -> Path:
    return PROJECT_ROOT / "models" / model_key(model)


def raw_root() -> Path:
    return PROJECT_ROOT / "data" / "raw"


def suite_records(suite: str) -> Path:
    return PROJECT_ROOT / "data" / "suites" / f"{suite}.json"


def pre_dir(suite: str) -> Path:
    return PROJECT_ROOT / "data" / "pre" / suite


def method_dir(model: str, method: str) -> Path:
    """What `prepare@<METHOD>` builds for the model: context templates, and any trained editor or store."""
    return PROJECT_ROOT / "artifacts" / "methods" / model_key(model) / method


def templates_file(model: str, method: str) -> Path:
    return method_dir(model, method) / "templates.json"


def prepare_metrics_file(method: str) -> Path:
    return PROJECT_ROOT / "metrics" / "prepare" / f"{method}.json"


def encoder_dir(name: str) -> Path:
    """A sentence encoder's files (`encoder` stage), shared by every model."""
    return PROJECT_ROOT / "artifacts" / "encoder" / name


def corpus_file(model: str) -> Path:
    return PROJECT_ROOT / "artifacts" / "corpus" / f"{model_key(model)}.safetensors"


def stats_dir(model: str) -> Path:
    return PROJECT_ROOT / "artifacts" / "stats" / model_key(model)


def deltas_dir(method: str, suite: str) -> Path:
    return PROJECT_ROOT / "artifacts" / "deltas" / method / suite


def edit_run_file(method: str, suite: str) -> Path:
    """The last edit run's statistics (computed, reused, seconds per edit): outside the delta directory, whose
    DVC hash must not change when a run recomputes nothing; untracked by git and DVC."""
    return PROJECT_ROOT / ".runs" / "edit" / method / f"{suite}.json"


def metrics_file(method: str, suite: str) -> Path:
    return PROJECT_ROOT / "metrics" / method / f"{suite}.json"


def records_file(method: str, suite: str) -> Path:
    """The per-record scores behind `metrics_file` (JSON Lines)."""
    return PROJECT_ROOT / "metrics" / method / f"{suite}.records.jsonl"


def protocol_file(method: str, suite: str) -> Path:
    """What the metrics were measured on and how (the report's only source of protocol text)."""
    return PROJECT_ROOT / "metrics" / method / f"{suite}.protocol.json"


def reports_dir() -> Path:
    return PROJECT_ROOT / "reports"


def general_unedited_file() -> Path:
    """The unedited model's Figure-4 outputs (the n = 0 point of every line)."""
    return PROJECT_ROOT / "artifacts" / "general" / "unedited.json"


def general_run_file(method: str, mode: str) -> Path:
    """A method's Figure-4 raw outputs along its chain in one mode (sequential or batch)."""
    return PROJECT_ROOT / "artifacts" / "general" / method / f"{mode}.json"


def general_metrics_file(method: str) -> Path:
    return PROJECT_ROOT / "metrics" / "general" / f"{method}.json"


def general_plot_file(method: str) -> Path:
    """The tidy CSV `dvc plots` draws Figure 4 from."""
    return PROJECT_ROOT / "plots" / "general" / f"{method}.csv"


def general_timing_file(name: str) -> Path:
    """The last Figure-4 run's timings (untracked, like `edit_run_file`)."""
    return PROJECT_ROOT / ".runs" / "general" / f"{name}.json"
