"""The survey's Figure-4 findings (`reference/figure4_findings.yaml`) tested on the tidy rows: per method and
task (Gu et al.'s scoring), the score after the chain's last checkpoint against the unedited score."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, PositiveInt

from kepitfalls.general.names import MAIN, TASKS


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    claim: str
    method: str
    expect: Literal["stable", "degrades"]
    edits: PositiveInt


def load(path: Path) -> list[Finding]:
    return [Finding.model_validate(item) for item in yaml.safe_load(path.read_text(encoding="utf-8"))]


def verdict(finding: Finding, unedited: float, after: dict[str, Any], min_n: int) -> str:
    """supported / contradicted where the interval after the chain decides it and rests on `min_n` examples;
    otherwise undecided (with the way the interval leans)."""
    below, covers = after["ci_high"] < unedited, after["ci_low"] <= unedited <= after["ci_high"]
    holds = below if finding.expect == "degrades" else covers
    fails = (not below) if finding.expect == "degrades" else below
    if after["n"] < min_n:
        lean = "for" if holds else "against"
        return f"undecided at n = {after['n']} (below report.min_n = {min_n}; the interval leans {lean} the claim)"
    return "supported" if holds else "contradicted" if fails else "undecided"


def to_markdown(findings: Sequence[Finding], rows: Sequence[dict[str, Any]], model: str, min_n: int) -> str:
    """One line per finding and task; a finding whose method this run has no chain for says so."""
    lines = [
        f"# Figure 4: the survey's findings, tested on {model}",
        "",
        "Per task (Gu et al.'s scoring), the unedited score, the score after the chain's last checkpoint with its "
        "95% interval, and the verdict: `stable` holds where the interval contains the unedited score, `degrades` "
        "where it lies wholly below it. The survey sees each finding at its `edits`; this run tests it at its own "
        "last checkpoint.",
        "",
        "| id | claim | task | edits (survey) | edits (here) | unedited | after | n | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for finding in findings:
        mine = [r for r in rows if r["method"] == finding.method and r["mode"] == "sequential" and r["scorer"] == "gu"]
        if not mine:
            lines.append(f"| {finding.id} | {finding.claim} | all | {finding.edits} | — | — | — | — | not run ({finding.method} has no chain here) |")
            continue
        for task in TASKS:
            points = {r["edits"]: r for r in mine if r["task"] == task and r["metric"] == MAIN[task]}
            last = max(points)
            after, unedited = points[last], points[0]["value"]
            lines.append(
                f"| {finding.id} | {finding.claim} | {task} | {finding.edits} | {last} | {unedited:.3f} | "
                f"{after['value']:.3f} [{after['ci_low']:.3f}, {after['ci_high']:.3f}] | {after['n']} | "
                f"{verdict(finding, unedited, after, min_n)} |"
            )
    return "\n".join(lines) + "\n"
