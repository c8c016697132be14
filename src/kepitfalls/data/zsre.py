"""zsRE in the MEND/ROME format, and KnowEdit's re-formatted zsRE test file.

MEND fields: `src` question, `alt` edit target, `answers` gold objects, `pred` the original model's answer,
`rephrase` paraphrase, `loc`/`loc_ans` an NQ locality question and answer. The same schema is used by
ROME's zsre_mem_* files, EasyEdit's zsre_mend_* files and Yao et al.'s One-Hop zsRE file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kepitfalls.requests import EditRequest

from .records import Fields, json_records, question_request, resolve

TRAIN_1K_FILE = "zsre_mend_train-1k.json"
KNOWEDIT_FILE = "knowedit_derived/ZsRE-test-all.json"


def zsre_request(fields: Fields) -> EditRequest:
    """The edit a MEND-schema record asks for: `src` about `subject`, from answers[0] to `alt`."""
    return question_request(fields.text("src"), fields.text("subject", non_empty=True), fields.text("alt", non_empty=True),
                            fields.texts("answers")[0])


@dataclass(frozen=True)
class ZsreRecord:
    case_id: int  # position in the file (zsRE has no ids)
    subject: str
    src: str
    pred: str
    rephrase: str
    alt: str
    answers: tuple[str, ...]
    loc: str
    loc_ans: str

    @property
    def request(self) -> EditRequest:
        return question_request(self.src, self.subject, self.alt, self.answers[0])


def load_zsre(path: Path) -> list[ZsreRecord]:
    """Read a MEND-schema zsRE JSON list (a file, or the zsre folder for its 1k train subset)."""
    return [
        ZsreRecord(
            case_id=f.index,
            subject=f.text("subject", non_empty=True),
            src=f.text("src"),
            pred=f.text("pred"),
            rephrase=f.text("rephrase"),
            alt=f.text("alt"),  # empty in one record of the 1k train subset (534); not an edit request here
            answers=f.texts("answers"),
            loc=f.text("loc"),
            loc_ans=f.text("loc_ans"),
        )
        for f in json_records(resolve(path, TRAIN_1K_FILE))
    ]


@dataclass(frozen=True)
class KnowEditProbe:
    """A locality or portability probe of KnowEdit; `kind` is its group name in the file."""

    kind: str
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class KnowEditZsreRecord:
    case_id: int  # position in the file
    subject: str
    prompt: str
    target_new: str
    ground_truth: tuple[str, ...]
    rephrase_prompt: str
    locality: tuple[KnowEditProbe, ...]  # "Relation_Specificity": other relations of the same subject
    portability: tuple[KnowEditProbe, ...]  # "Reasoning", "Logical_Generalization", "Subject_Aliasing"

    @property
    def request(self) -> EditRequest:
        return question_request(self.prompt, self.subject, self.target_new, self.ground_truth[0])


def _probes(fields: Fields, key: str) -> tuple[KnowEditProbe, ...]:
    """Flatten {group: [{prompt, ground_truth}]}; ground_truth is a string or a list of strings."""
    groups = fields.obj(key)
    probes = []
    for kind in groups.data:
        for probe in groups.objs(kind):
            answers = (probe.text("ground_truth"),) if isinstance(probe.raw("ground_truth"), str) else probe.texts("ground_truth")
            probes.append(KnowEditProbe(kind, probe.text("prompt"), answers))
    return tuple(probes)


def load_knowedit_zsre(path: Path) -> list[KnowEditZsreRecord]:
    """Read KnowEdit's ZsRE-test-all.json (a file, or the zsre folder)."""
    return [
        KnowEditZsreRecord(
            case_id=f.index,
            subject=f.text("subject", non_empty=True),
            prompt=f.text("prompt"),
            target_new=f.text("target_new", non_empty=True),
            ground_truth=f.texts("ground_truth"),
            rephrase_prompt=f.text("rephrase_prompt"),
            locality=_probes(f, "locality"),
            portability=_probes(f, "portability"),
        )
        for f in json_records(resolve(path, KNOWEDIT_FILE))
    ]
