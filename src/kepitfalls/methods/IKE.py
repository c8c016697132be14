"""IKE (Zheng et al. 2023): in-context editing with retrieved demonstrations; the weights never change.

Demonstration store (the `prepare@IKE` hook, once per model): for every training record with a new target,
f = "{question} {target}" gives three demonstrations (PKUnlp-icler/IKE@da58c84 icl.py:30-51, EasyEdit
models/ike/util.py):

    copy    "New Fact: {f}\\nPrompt: {f}\\n\\n"
    update  "New Fact: {f}\\nPrompt: {rephrase} {target}\\n\\n"
    retain  "New Fact: {f}\\nPrompt: {locality question} {locality answer}\\n\\n"

all embedded with all-MiniLM-L6-v2 (the `encoder` stage). The query of an edit is
"New Fact: {f}\\nPrompt: {prompt}" (encode_facts.py), compared by dot product of unit vectors.

Orderings (`ordering`):
- `reference` (default): the k nearest *records* by their copy demonstration, each shown as one kind drawn
  from a seeded shuffle of the multiset copy : update : retain = 1 : 3 : 4 (icl.py's 4 : 12 : 16 for k = 32),
  nearest first, then reversed, so the most similar demonstration sits next to the query.
- `easyedit`: the k nearest demonstrations of the flat pool of all three kinds, most similar first
  (EasyEdit ike_main.py), so kinds are not balanced.

Scoring context (router): the demonstrations, then "New Fact: {f}\\nPrompt: {f}\\n\\n" (icl.py appends it),
then "New Fact: {f}\\nPrompt: " before the scored prompt. Where several facts are applied (sequential suites),
the demonstrations are the latest edit's, and every fact appears, oldest first, as its own copy line and its
own "New Fact:" line before "Prompt: ". Every prompt is routed, locality prompts included, as in the
reference. An edit whose context leaves fewer than `reserve_tokens` of the model's context length is refused
at edit time with the lengths in the message.

The demonstrations' keys and values are computed once per edit and reused for every prompt scored under it
(`scoring.router.PrefixCachedModel`), in teacher-forced scoring and greedy generation alike.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import PositiveInt

from kepitfalls.atomic import write_json
from kepitfalls.data.zsre import load_zsre
from kepitfalls.deltas.codecs import MemoryDelta
from kepitfalls.encoder import SentenceEncoder
from kepitfalls.methods.base import EditMethod, Hparams
from kepitfalls.models.loading import LoadedModel
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.router import Router
from kepitfalls.tensorfile import load_tensors, save_tensors

DEMOS_FILE = "demos.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
KINDS = ("copy", "update", "retain")
#: icl.py's multiset of kinds per 8 demonstrations (4 : 12 : 16 over 32).
KIND_RATIO = {"copy": 1, "update": 3, "retain": 4}


class IKEHparams(Hparams):
    """`methods.IKE.<model>`: k demonstrations, their order, the encoder, the store's source and seed."""

    k: PositiveInt
    ordering: Literal["reference", "easyedit"]
    encoder: Literal["all-minilm-l6-v2"]
    train_file: str  # under data/raw/zsre: the MEND-schema zsRE training records the demonstrations come from
    reserve_tokens: PositiveInt  # context left for the scored prompt and target
    seed: int


def new_fact(prompt: str, target: str) -> str:
    return f"{prompt} {target}"


def demonstration(fact: str, prompt: str, answer: str) -> str:
    return f"New Fact: {fact}\nPrompt: {prompt} {answer}\n\n"


def copy_line(fact: str) -> str:
    return f"New Fact: {fact}\nPrompt: {fact}\n\n"


def query_text(fact: str, prompt: str) -> str:
    return f"New Fact: {fact}\nPrompt: {prompt}"


def build_store(records: Sequence[Any]) -> list[dict[str, str]]:
    """Three demonstrations per training record that has a new target (zsRE: src, alt, rephrase, loc, loc_ans)."""
    store = []
    for record in records:
        if not record.alt.strip():
            continue
        fact = new_fact(record.src, record.alt)
        store.append({
            "copy": copy_line(fact),
            "update": demonstration(fact, record.rephrase, record.alt),
            "retain": demonstration(fact, record.loc, record.loc_ans),
        })
    return store


def kind_sequence(k: int, rng: random.Random) -> list[str]:
    """The reference's seeded shuffle of copy : update : retain = 1 : 3 : 4 over k demonstrations."""
    block = sum(KIND_RATIO.values())
    if k % block:
        raise ValueError(f"methods.IKE: ordering 'reference' needs k a multiple of {block} (copy:update:retain 1:3:4), got {k}")
    kinds = [kind for kind, count in KIND_RATIO.items() for _ in range(count * k // block)]
    rng.shuffle(kinds)
    return kinds


def select_demonstrations(
    store: Sequence[dict[str, str]], embeddings: torch.Tensor, query: torch.Tensor, k: int, ordering: str, rng: random.Random
) -> tuple[list[str], list[int]]:
    """The k demonstrations in context order (first to last) and their ids (record * 3 + kind index).

    `embeddings` holds every demonstration's unit vector, row record * 3 + kind index (copy, update, retain).
    """
    if ordering == "reference":
        scores = embeddings[0::3] @ query
        nearest = torch.topk(scores, min(k, len(store))).indices.tolist()
        kinds = kind_sequence(k, rng)[: len(nearest)]
        ids = [record * 3 + KINDS.index(kind) for record, kind in zip(nearest, kinds)]
        ids.reverse()  # most similar last, next to the query (icl.py: icl_examples.reverse())
    else:
        ids = torch.topk(embeddings @ query, min(k, len(embeddings))).indices.tolist()  # most similar first
    return [store[i // 3][KINDS[i % 3]] for i in ids], ids


def demonstrations(entries: Sequence[dict[str, Any]]) -> str:
    """The latest edit's demonstrations, then every fact's copy line, oldest first: shared by every prompt."""
    return "".join(entries[-1]["demos"]) + "".join(copy_line(entry["fact"]) for entry in entries)


def context(entries: Sequence[dict[str, Any]]) -> str:
    """The text before a scored prompt: the demonstrations, then every fact oldest first, then "Prompt: "."""
    return demonstrations(entries) + "".join(f"New Fact: {entry['fact']}\n" for entry in entries) + "Prompt: "


class IKERouter(Router):
    """Every prompt scored after the applied facts' context."""

    def rewrite(self, memory: Sequence[Any], prompts: Sequence[str]) -> list[str | None]:
        prefix = context([entry for delta in memory for entry in delta.entries])
        return [prefix + prompt for prompt in prompts]

    def shared_prefix(self, memory: Sequence[Any]) -> str | None:
        """The demonstrations and the next "New Fact:" (a blank line at the end would tokenise differently
        before "New" than at the end of the text; ":" before a space is a clean token boundary)."""
        return demonstrations([entry for delta in memory for entry in delta.entries]) + "New Fact:"


class IKE(EditMethod):
    """Retrieves demonstrations for each fact; its deltas are memory entries the router turns into context."""

    name = "IKE"
    hparams_type = IKEHparams
    own_sources = ("encoder.py",)  # embeds each edit's query
    hparams: IKEHparams

    def upstream_files(self) -> list[Path]:
        return [self.artifacts.prepared(self.name, DEMOS_FILE), self.artifacts.prepared(self.name, EMBEDDINGS_FILE)]

    def prepare(self, lm: LoadedModel, params: Any, out_dir: Path) -> dict[str, float | int | str]:
        """Build and embed the demonstration store from the zsRE training records."""
        from kepitfalls import layout  # not at import time: layout reads params, whose schema imports this module

        store = build_store(load_zsre(layout.raw_root() / "zsre" / self.hparams.train_file))
        embeddings = self._encoder.encode([demo[kind] for demo in store for kind in KINDS])
        write_json(out_dir / DEMOS_FILE, {"train_file": self.hparams.train_file, "encoder": self.hparams.encoder, "demos": store})
        save_tensors(out_dir / EMBEDDINGS_FILE, {"embeddings": embeddings.contiguous()})
        return {"records": len(store), "demonstrations": 3 * len(store), "dim": int(embeddings.shape[1])}

    @functools.cached_property
    def _store(self) -> tuple[list[dict[str, str]], torch.Tensor]:
        """The prepared demonstrations and their embeddings, read once."""
        demos, embeddings = self.upstream_files()
        store = json.loads(demos.read_text(encoding="utf-8"))["demos"]
        return store, load_tensors(embeddings)[0]["embeddings"]

    @functools.cached_property
    def _encoder(self) -> SentenceEncoder:
        from kepitfalls import layout  # not at import time: layout reads params, whose schema imports this module

        return SentenceEncoder(layout.encoder_dir(self.hparams.encoder))

    def router(self) -> Router:
        return IKERouter()

    def edit_batch(self, lm: LoadedModel, requests: list[EditRequest]) -> MemoryDelta:
        (request,) = requests
        store, embeddings = self._store
        fact = new_fact(request.rewrite_prompt, request.target_new)
        query = self._encoder.encode([query_text(fact, request.rewrite_prompt)])[0]
        rng = random.Random(f"{self.hparams.seed}\0{fact}")
        demos, ids = select_demonstrations(store, embeddings, query, self.hparams.k, self.hparams.ordering, rng)
        entry = {"fact": fact, "demos": demos, "demo_ids": ids, "ordering": self.hparams.ordering}
        self._check_length(lm, entry)
        return MemoryDelta(self.name, [entry])

    def _check_length(self, lm: LoadedModel, entry: dict[str, Any]) -> None:
        limit = lm.model.config.max_position_embeddings  # GPT-2 and GPT-J configs map it to n_positions
        used = len(lm.tokenizer(context([entry]))["input_ids"])
        if used + self.hparams.reserve_tokens > limit:
            raise ValueError(
                f"IKE: the context for {entry['fact']!r} takes {used} tokens, leaving fewer than reserve_tokens = "
                f"{self.hparams.reserve_tokens} of the model's {limit}; lower methods.IKE.<model>.k"
            )


def describe(hparams: IKEHparams) -> str:
    return f"IKE: k = {hparams.k} demonstrations ({hparams.ordering} ordering), {hparams.encoder} retrieval over {hparams.train_file}"
