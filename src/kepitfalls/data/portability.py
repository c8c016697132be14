"""Yao et al. 2023 portability sets (EasyEdit): Subject-Replace, Inverse-Relation and One-Hop.

Probes follow the project's metric spec (METRICS.md §2.1): Subject-Replace asks the edited relation of an alternative
subject and expects the new target; Inverse-Relation (zsRE only) asks the inverse question and expects the
original subject; One-Hop asks GPT-4's follow-up question and expects its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kepitfalls.requests import EditRequest, fill

from .counterfact import parse_counterfact
from .records import Fields, Probe, json_records, resolve
from .zsre import zsre_request


@dataclass(frozen=True)
class PortabilityRecord:
    case_id: int  # CounterFact's case_id; the position in the file for zsRE
    dataset: str
    kind: str
    request: EditRequest
    probes: tuple[Probe, ...]


_Parsed = tuple[int, EditRequest, tuple[Probe, ...]]


def _one_hop_probe(fields: Fields) -> tuple[Probe, ...]:
    portability = fields.obj("portability")
    return (Probe(portability.text("New Question"), portability.text("New Answer")),)


def _cf_one_hop(fields: Fields) -> _Parsed:
    record = parse_counterfact(fields)
    return record.case_id, record.request, _one_hop_probe(fields)


def _cf_subject_replace(fields: Fields) -> _Parsed:
    record = parse_counterfact(fields)
    probe = Probe(fill(record.prompt, fields.text("alternative_subject")), record.target_new)
    return record.case_id, record.request, (probe,)


def _zsre_one_hop(fields: Fields) -> _Parsed:
    return fields.index, zsre_request(fields), _one_hop_probe(fields)


def _zsre_subject_replace(fields: Fields) -> _Parsed:
    request = zsre_request(fields)
    return fields.index, request, (Probe(fields.text("alter_subject_question"), request.target_new),)


def _zsre_inverse_relation(fields: Fields) -> _Parsed:
    request = zsre_request(fields)
    return fields.index, request, (Probe(fields.text("inverse question"), request.subject),)


_FILES: dict[tuple[str, str], tuple[str, Callable[[Fields], _Parsed]]] = {
    ("counterfact", "one_hop"): ("portability/One Hop/counterfact_portability_gpt4.json", _cf_one_hop),
    ("counterfact", "subject_replace"): ("portability/Subject Replace/counterfact_subject_replace.json", _cf_subject_replace),
    ("zsre", "one_hop"): ("portability/One Hop/zsre_mend_eval_portability_gpt4.json", _zsre_one_hop),
    ("zsre", "subject_replace"): ("portability/Subject Replace/zsre_subject_replace.json", _zsre_subject_replace),
    ("zsre", "inverse_relation"): ("portability/Inverse Relation/zsre_inverse_relation.json", _zsre_inverse_relation),
}


def portability_sets() -> list[tuple[str, str]]:
    """The (dataset, kind) pairs that exist (there is no CounterFact Inverse-Relation set)."""
    return list(_FILES)


def load_portability(path: Path, dataset: str, kind: str) -> list[PortabilityRecord]:
    """Read one portability file (given directly, or found in the easyedit_portability folder)."""
    if (dataset, kind) not in _FILES:
        raise ValueError(f"no portability set {dataset}/{kind}; available: {portability_sets()}")
    relpath, parse = _FILES[(dataset, kind)]
    records = []
    for fields in json_records(resolve(path, relpath)):
        case_id, request, probes = parse(fields)
        records.append(PortabilityRecord(case_id, dataset, kind, request, probes))
    return records
