"""The survey's qualitative claims (reference/findings.yaml), each tested on this run's per-record scores:
the paired difference a − b on the records both methods were evaluated on, its paired-bootstrap 95%
interval, and a verdict: supported, contradicted, or undecided at the present n."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import TypeAdapter, ValidationError

from kepitfalls.report.cells import load_rows
from kepitfalls.report.settings import ReportOptions
from kepitfalls.report.format import number, tex
from kepitfalls.schema import Section
from kepitfalls.stats.intervals import Interval, paired_difference, separating_n


class Claim(Section):
    """One testable comparison: `a`'s `metric` on `suite` is `relation` (above/below) `b`'s."""

    id: str
    claim: str
    source: str  # the survey sentence it comes from (or a paraphrase, `quoted: false`)
    quoted: bool
    suite: str
    metric: str
    a: str
    relation: Literal["above", "below"]
    b: str


@dataclass(frozen=True)
class Result:
    claim: Claim
    difference: Interval | None  # None: one of the methods has no rows for the metric
    verdict: str


def load(path: Path) -> list[Claim]:
    """The claims file, validated; an error names the file and the entry."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    try:
        claims = TypeAdapter(list[Claim]).validate_python(raw)
    except ValidationError as error:
        problems = "; ".join(f"entry {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ValueError(f"{path}: {problems}") from None
    duplicates = sorted({c.id for c in claims if sum(d.id == c.id for d in claims) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate claim ids {duplicates}")
    return claims


def verdict(claim: Claim, difference: Interval, min_n: int) -> str:
    """Supported or contradicted where the interval excludes 0 (in the claimed direction or against it) and
    rests on at least `min_n` shared records: a bootstrap over one to a few records gives a degenerate or
    far too narrow interval, so below `report.min_n` a claim stays undecided whatever its interval says."""
    sign = 1 if claim.relation == "above" else -1
    if difference.excludes_zero() and difference.n >= min_n:
        return "supported" if sign * difference.value > 0 else "contradicted"
    if difference.excludes_zero():
        leaning = "for" if sign * difference.value > 0 else "against"
        return f"undecided at n = {difference.n} (below report.min_n = {min_n}; the interval leans {leaning} the claim)"
    needed = separating_n(difference)
    return f"undecided at n = {difference.n}" + (f" (the observed difference would separate at n ≈ {needed})" if needed else "")


def evaluate(claims: list[Claim], metrics_root: Path, options: ReportOptions) -> list[Result]:
    results = []
    for claim in claims:
        rows = [load_rows(metrics_root, m, claim.suite).get(claim.metric) for m in (claim.a, claim.b)]
        if rows[0] is None or rows[1] is None:
            missing = [m for m, r in zip((claim.a, claim.b), rows) if r is None]
            results.append(Result(claim, None, f"not tested: no {claim.suite} {claim.metric} records for {', '.join(missing)}"))
            continue
        difference = paired_difference(rows[0], rows[1], options.bootstrap.resamples, options.bootstrap.seed)
        results.append(Result(claim, difference, verdict(claim, difference, options.min_n)))
    return results


def _difference(result: Result) -> list[str]:
    d = result.difference
    return ["", "", "", ""] if d is None else [number(d.value), number(d.low), number(d.high), str(d.n)]


def to_markdown(results: list[Result], model: str) -> str:
    lines = [
        "# Survey findings, tested", "",
        f"Each claim of the survey (Hsueh et al. 2024, section 4.2) that this run can test, on model {model}: the paired "
        "difference a − b of the metric on the records both methods were evaluated on, its 95% paired-bootstrap "
        "interval, and the verdict (supported or contradicted where the interval excludes 0 and rests on at least "
        "`report.min_n` shared records; undecided otherwise).", "",
        "| " + " | ".join(["id", "claim", "metric", "a − b", "95% interval", "n", "verdict"]) + " |", "|" + "---|" * 7,
    ]
    for r in results:
        value, low, high, n = _difference(r)
        interval_text = f"[{low}, {high}]" if low else ""
        lines.append(f"| {r.claim.id} | {r.claim.claim} | {r.claim.suite} {r.claim.metric} | {value} | {interval_text} | {n} | {r.verdict} |")
    lines += ["", "Sources (paraphrases where marked; the survey's text was not available offline):", ""]
    lines += [f"- {r.claim.id}: {r.claim.source}" + ("" if r.claim.quoted else " (paraphrase)") for r in results]
    return "\n".join(lines) + "\n"


def to_latex(results: list[Result], model: str) -> str:
    lines = ["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{lllrrrl}", "\\toprule",
             "Claim & Metric & $a-b$ & low & high & $n$ & Verdict \\\\", "\\midrule"]
    for r in results:
        value, low, high, n = _difference(r)
        lines.append(" & ".join(tex(t) for t in (r.claim.claim, f"{r.claim.suite} {r.claim.metric}", value, low, high, n, r.verdict)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{{tex(f'Survey findings (Hsueh et al. 2024, section 4.2) tested on {model}: paired difference on shared records, 95% paired-bootstrap interval, verdict.')}}}",
              "\\label{tab:findings}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(results: list[Result]) -> str:
    """Numbers in their own columns (empty where untested); text in id, claim, suite, metric, verdict, source."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "claim", "suite", "metric", "a", "relation", "b", "difference", "ci_low", "ci_high", "n", "verdict", "source", "quoted"])
    for r in results:
        d, c = r.difference, r.claim
        numbers = ["", "", "", ""] if d is None else [d.value, d.low, d.high, d.n]
        writer.writerow([c.id, c.claim, c.suite, c.metric, c.a, c.relation, c.b, *numbers, r.verdict, c.source, int(c.quoted)])
    return buffer.getvalue()
