"""The survey's Figure-4 findings (`reference/figure4_findings.yaml`) tested on the tidy rows: per method and
task (Gu et al.'s scoring), the paired change of the score from the unedited model to the chain's last
checkpoint, on the same examples (`general.scores`)."""

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
    """From the paired change's 95% interval: `degrades` is supported where it lies wholly below 0 and
    contradicted where it does not reach below 0; `stable` is supported where it contains 0 and contradicted
    where it excludes 0. Undecided in between, below `min_n` examples, and where the unedited score is 0 (a
    task the model cannot do has nothing to lose, and staying at 0 shows no stability)."""
    low, high = after["change_low"], after["change_high"]
    if unedited == 0:
        return "uninformative (the unedited model scores 0 on this task)"
    holds = high < 0 if finding.expect == "degrades" else low <= 0 <= high
    fails = low >= 0 if finding.expect == "degrades" else not low <= 0 <= high
    if after["n"] < min_n:
        lean = "for" if holds else "against"
        return f"undecided at n = {after['n']} (below report.min_n = {min_n}; the change leans {lean} the claim)"
    return "supported" if holds else "contradicted" if fails else "undecided"


def to_markdown(findings: Sequence[Finding], rows: Sequence[dict[str, Any]], model: str, min_n: int) -> str:
    """One line per finding and task; a finding whose method this run has no chain for says so."""
    lines = [
        f"# Figure 4: the survey's findings, tested on {model}",
        "",
        "Per task (Gu et al.'s scoring), the unedited score, the score after the chain's last checkpoint with its "
        "95% interval, the paired change between the two on the same examples with its 95% bootstrap interval, "
        "and the verdict read from the change: `stable` holds where its interval contains 0, `degrades` where it "
        "lies wholly below 0. The survey sees each finding at its `edits`; this run tests it at its own last "
        "checkpoint.",
        "",
        "| id | claim | task | edits (survey) | edits (here) | unedited | after | change | n | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for finding in findings:
        mine = [r for r in rows if r["method"] == finding.method and r["mode"] == "sequential" and r["scorer"] == "gu"]
        if not mine:
            lines.append(f"| {finding.id} | {finding.claim} | all | {finding.edits} | — | — | — | — | — | not run ({finding.method} has no chain here) |")
            continue
        for task in TASKS:
            points = {r["edits"]: r for r in mine if r["task"] == task and r["metric"] == MAIN[task]}
            last = max(points)
            after, unedited = points[last], points[0]["value"]
            lines.append(
                f"| {finding.id} | {finding.claim} | {task} | {finding.edits} | {last} | {unedited:.3f} | "
                f"{after['value']:.3f} [{after['ci_low']:.3f}, {after['ci_high']:.3f}] | "
                f"{after['change']:+.3f} [{after['change_low']:+.3f}, {after['change_high']:+.3f}] | {after['n']} | "
                f"{verdict(finding, unedited, after, min_n)} |"
            )
    return "\n".join(lines) + "\n"
