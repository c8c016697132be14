"""CounterFact efficacy, paraphrase and neighbourhood scores and magnitudes, and CounterFact+ (METRICS.md §3.3).

Follows `rome/experiments/summarize.py`: every comparison is between P̄ of the new and of the true
object (the reference compares mean NLLs, which orders the same way), averaged over a case's prompts and
then over cases, ×100. Score is the harmonic mean of ES, PS and NS. NS+/NM+ are NS/NM on the distracting
prompts of Hoelscher-Obermaier et al. (2023). Neighbourhood KL is KL(P_edited ‖ P_unedited) of the
next-token distribution after each neighbourhood prompt, averaged over prompts then cases, reported twice:
`*_ref` divided by the vocabulary size as specificityplus' `kl_div(..., reduction="batchmean")` on a 1-D
tensor does (the paper's ~1e-5 values), and the plain KL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import harmonic_mean, mean
from typing import Any

import torch

from kepitfalls.metrics.records import BINARY, MEAN, diagnostic_metrics, diagnostic_rows, row


@dataclass(frozen=True)
class PromptScore:
    """P̄ of the new and the true object after one prompt, on the edited model."""

    p_new: float
    p_true: float


@dataclass(frozen=True)
class CaseScores:
    rewrite: PromptScore
    paraphrase: tuple[PromptScore, ...]
    neighborhood: tuple[PromptScore, ...]
    distracting: tuple[PromptScore, ...] = ()
    neighborhood_kl: tuple[float, ...] = ()  # plain KL per neighbourhood prompt
    distracting_kl: tuple[float, ...] = ()
    #: per-prompt diagnostics of components an edit installed (`<quantity>_<prompt set>`), else empty
    diagnostics: dict[str, tuple[float, ...]] = field(default_factory=dict)


def kl_divergence(pre_logprobs: torch.Tensor, post_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(P_post ‖ P_pre) per row of (prompts, |V|) log-probabilities, in nats (float64)."""
    post = post_logprobs.double()
    return (post.exp() * (post - pre_logprobs.double())).sum(-1)


def _success(scores: tuple[PromptScore, ...], new_wins: bool) -> float:
    """Share of prompts where the wanted object is strictly more probable (a tie is a failure)."""
    return mean(float(s.p_new > s.p_true if new_wins else s.p_true > s.p_new) for s in scores)


def _magnitude(scores: tuple[PromptScore, ...], new_minus_true: bool) -> float:
    sign = 1.0 if new_minus_true else -1.0
    return mean(sign * (s.p_new - s.p_true) for s in scores)


def counterfact_metrics(cases: list[CaseScores], vocab_size: int | None = None) -> dict[str, float]:
    """ES, EM, PS, PM, NS, NM and Score ×100; NS+/NM+ and NKL where the cases carry them."""
    if not cases:
        raise ValueError("no CounterFact cases to summarise")
    es = 100 * mean(_success((c.rewrite,), True) for c in cases)
    ps = 100 * mean(_success(c.paraphrase, True) for c in cases)
    ns = 100 * mean(_success(c.neighborhood, False) for c in cases)
    metrics = {
        "ES": es,
        "EM": 100 * mean(_magnitude((c.rewrite,), True) for c in cases),
        "PS": ps,
        "PM": 100 * mean(_magnitude(c.paraphrase, True) for c in cases),
        "NS": ns,
        "NM": 100 * mean(_magnitude(c.neighborhood, False) for c in cases),
        "Score": harmonic_mean([es, ps, ns]) if min(es, ps, ns) > 0 else 0.0,
        "cases": float(len(cases)),
    }
    if all(c.distracting for c in cases):
        metrics["NS_plus"] = 100 * mean(_success(c.distracting, False) for c in cases)
        metrics["NM_plus"] = 100 * mean(_magnitude(c.distracting, False) for c in cases)
    for name, values in (("NKL", [c.neighborhood_kl for c in cases]), ("NKL_plus", [c.distracting_kl for c in cases])):
        if all(values):
            if vocab_size is None:
                raise ValueError("the reference-normalised NKL needs the vocabulary size")
            metrics[name] = mean(mean(v) for v in values)
            metrics[f"{name}_ref"] = metrics[name] / vocab_size
    metrics.update(diagnostic_metrics([c.diagnostics for c in cases]))
    return metrics


def _prompt_successes(scores: tuple[PromptScore, ...], new_wins: bool) -> list[float]:
    return [100 * _success((s,), new_wins) for s in scores]


def _prompt_magnitudes(scores: tuple[PromptScore, ...], new_minus_true: bool) -> list[float]:
    return [100 * _magnitude((s,), new_minus_true) for s in scores]


def counterfact_records(cases: list[CaseScores], ids: list[str], vocab_size: int | None = None) -> list[dict[str, Any]]:
    """The per-case rows behind `counterfact_metrics` (Score and cases are not per-case statistics)."""
    rows = []
    for case_id, c in zip(ids, cases, strict=True):
        prompt_sets = [
            ("ES", "EM", (c.rewrite,), True), ("PS", "PM", c.paraphrase, True), ("NS", "NM", c.neighborhood, False),
        ]
        if all(x.distracting for x in cases):
            prompt_sets.append(("NS_plus", "NM_plus", c.distracting, False))
        for success, magnitude, scores, new_wins in prompt_sets:
            hits, sizes = _prompt_successes(scores, new_wins), _prompt_magnitudes(scores, new_wins)
            if success == "ES":
                rows.append(row(case_id, success, BINARY, hits[0]))
            else:
                rows.append(row(case_id, success, MEAN, mean(hits), hits))
            rows.append(row(case_id, magnitude, MEAN, mean(sizes), sizes if len(sizes) > 1 else None))
        for name, attribute in (("NKL", "neighborhood_kl"), ("NKL_plus", "distracting_kl")):
            if all(getattr(x, attribute) for x in cases):
                kl = getattr(c, attribute)
                if vocab_size is None:
                    raise ValueError("the reference-normalised NKL needs the vocabulary size")
                rows.append(row(case_id, name, MEAN, mean(kl), kl))
                rows.append(row(case_id, f"{name}_ref", MEAN, mean(kl) / vocab_size))
        rows.extend(diagnostic_rows(case_id, c.diagnostics))
    return rows
