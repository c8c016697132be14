"""Constructed stand-ins for Yao et al.'s Distract-Neighbor and Other-Attribution locality sets.

The originals exist only inside EasyEdit's Google Drive bundle (registered as optional files), so these
sets are rebuilt from published records and flagged `constructed=True`:

- Distract-Neighbor follows CounterFact+ (Hoelscher-Obermaier et al. 2023) exactly: each neighbourhood
  prompt of a CounterFact case is prefixed with the edit itself, `f"{rewrite_prompt} {target_new}. "`; the
  continuation whose argmax tokens must not change is the case's original object (`target_true`).
- Other-Attribution needs another relation of the edited subject with its true object. CounterFact cannot
  supply that at scale (only ~81 of the 1,244 ROME-schema cases have another case about the same subject
  and a provably different relation), so it is built from KnowEdit's zsRE test file, whose
  `Relation_Specificity` probes are exactly that: other Wikidata relations of the edited subject with
  their gold objects (2 per case, all 1,304 cases). The edit is the case's own zsRE edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from kepitfalls.requests import EditRequest

from .counterfact import CounterFactRecord
from .records import Probe
from .zsre import KnowEditZsreRecord


OTHER_RELATION_KIND = "Relation_Specificity"


@dataclass(frozen=True)
class DistractNeighborRecord:
    case_id: int
    request: EditRequest
    prompts: tuple[str, ...]
    continuation: str  # the neighbours' (unedited) object
    constructed: bool = True


@dataclass(frozen=True)
class OtherAttributionRecord:
    case_id: int
    request: EditRequest
    probes: tuple[Probe, ...]
    constructed: bool = True


def distract_neighbor(records: Iterable[CounterFactRecord]) -> list[DistractNeighborRecord]:
    """CounterFact+ distracting prompts for each CounterFact case."""
    return [
        DistractNeighborRecord(
            case_id=r.case_id,
            request=r.request,
            prompts=tuple(f"{r.rewrite_prompt} {r.target_new}. {n}" for n in r.neighborhood_prompts),
            continuation=r.target_true,
        )
        for r in records
    ]


def other_attribution(records: Iterable[KnowEditZsreRecord]) -> list[OtherAttributionRecord]:
    """Other relations of each edited subject, from KnowEdit's Relation_Specificity probes.

    A probe with several gold answers uses the first one; cases without such probes are skipped.
    """
    built = []
    for r in records:
        probes = tuple(Probe(p.prompt, p.answers[0]) for p in r.locality if p.kind == OTHER_RELATION_KIND)
        if probes:
            built.append(OtherAttributionRecord(r.case_id, r.request, probes))
    return built
