"""Training MEND's editor on zsRE (eric-mitchell/mend `trainer.py` EditTrainer), and validating it.

One training step edits one record (batch size 1, EasyEdit's GPT-J setting) starting from the unedited
model: the edit is the question ⊕ new answer (`edit_inner`); the outer loss is
cedit · NLL(new answer | a *rephrase* of the question, edited model) + cloc · KL(pre ‖ post) over every
position of an unrelated NQ question ⊕ its answer (`loc`), as the reference (`data_classes/zsre.py`,
`losses.py kl_loc_loss`). EasyEdit's trainer reads the edit prompt itself for the edit loss; that is not
copied. Gradients are accumulated over `accumulate_bs` steps, clipped to `grad_clip`, then Adam(lr) steps
the networks and Adam(lr_lr) the per-layer edit learning rates. A non-finite loss or gradient stops training.

Validation edits held-out records of the same training file (never a suite record) with the statistics
frozen and reports means over them. The untrained control only accumulates the normalisation statistics over
the same training edits: they depend on the unedited model alone, so they equal the trained editor's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from kepitfalls.data.zsre import ZsreRecord
from kepitfalls.mend.edit import Scored, Top, gradient_factors, log_probs, pending, target_nll
from kepitfalls.mend.net import MendEditor
from kepitfalls.models.loading import LoadedModel
from kepitfalls.progress import progress


@dataclass(frozen=True)
class Example:
    """One training or validation edit built from a zsRE record."""

    record: int
    inner: Scored  # question ⊕ new answer: the edit
    outer: Scored  # rephrase ⊕ new answer: what the edit loss reads
    loc: list[int]  # an unrelated question ⊕ its answer: the locality KL, every position


@dataclass(frozen=True)
class Settings:
    """The training part of `methods.MEND.<model>`."""

    steps: int
    lr: float
    lr_lr: float
    cedit: float
    cloc: float
    accumulate_bs: int
    grad_clip: float
    seed: int


def examples(tokenizer, records: list[ZsreRecord]) -> list[Example]:
    """Every record with a new answer, a rephrase and a locality pair (record 534 of the 1k file has no `alt`)."""
    usable = [r for r in records if r.alt.strip() and r.rephrase.strip() and r.loc.strip() and r.loc_ans.strip()]
    return [
        Example(r.case_id, Scored.of(tokenizer, r.src, r.alt), Scored.of(tokenizer, r.rephrase, r.alt),
                Scored.of(tokenizer, r.loc, r.loc_ans).ids)
        for r in usable
    ]


def split(items: list[Example], val_records: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(training, validation): a seeded shuffle, the first `val_records` held out."""
    if val_records >= len(items):
        raise ValueError(f"MEND val_records ({val_records}) must be below the {len(items)} usable training records")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    return [items[i] for i in order[val_records:]], [items[i] for i in order[:val_records]]


def edit_step(lm: LoadedModel, editor: MendEditor, modules: list[str], start: int, example: Example, training: bool):
    """(edit loss, locality KL, figures) of editing one example; the losses carry gradients when training."""
    top = _top(lm, example, start)
    loc_positions = range(len(example.loc))
    with torch.no_grad():
        pre_outer, pre_loc = log_probs(lm, top.hidden([1, 2]), [example.outer.positions, loc_positions])
    factors = gradient_factors(lm, top, [0], [example.inner], modules)
    editor.train(training)
    with torch.set_grad_enabled(training):
        with pending(lm.model, editor.updates(factors)):
            post = top.hidden([0, 1, 2])
        post_inner, post_outer, post_loc = log_probs(lm, post, [example.inner.positions, example.outer.positions, loc_positions])
        edit_loss = target_nll(post_outer, example.outer)
        loc_kl = (pre_loc.exp() * (pre_loc - post_loc)).sum(-1).mean()
    figures = {
        "edit_nll": edit_loss.item(),
        "edit_acc": _token_accuracy(post_outer, example.outer),
        "edit_success": float(_token_accuracy(post_outer, example.outer) == 1.0),
        "pre_edit_success": float(_token_accuracy(pre_outer, example.outer) == 1.0),
        "efficacy_success": float(_token_accuracy(post_inner, example.inner) == 1.0),
        "loc_kl": loc_kl.item(),
        "loc_agreement": (pre_loc.argmax(-1) == post_loc.argmax(-1)).float().mean().item(),
    }
    return edit_loss, loc_kl, figures


def _top(lm: LoadedModel, example: Example, start: int) -> Top:
    """The example's three sequences from block `start`; the control builds the same batch, so that its
    statistics equal the trained editor's bit for bit."""
    return Top(lm, [example.inner.ids, example.outer.ids, example.loc], start)


def _token_accuracy(rows: torch.Tensor, scored: Scored) -> float:
    return (rows.argmax(-1).cpu() == torch.tensor(scored.labels)).float().mean().item()


def fit(lm: LoadedModel, editor: MendEditor, modules: list[str], start: int, train: list[Example], settings: Settings, optimise: bool) -> dict[str, float]:
    """Train for `settings.steps` edits (or, with `optimise` false, only gather the normalisation statistics)."""
    if not train:
        raise ValueError("MEND training has no usable records")
    order = _order(len(train), settings.steps, settings.seed)
    optimiser = torch.optim.Adam(editor.hyper_parameters(), lr=settings.lr)
    lr_optimiser = torch.optim.Adam([editor.edit_lrs], lr=settings.lr_lr)
    started = time.perf_counter()
    last_loss: dict[str, float] = {}
    for step, index in progress(list(enumerate(order)), "MEND training" if optimise else "MEND statistics", lambda item: str(item[0])):
        example = train[index]
        if not optimise:
            editor.observe(gradient_factors(lm, _top(lm, example, start), [0], [example.inner], modules))
            continue
        edit_loss, loc_kl, _ = edit_step(lm, editor, modules, start, example, training=True)
        loss = settings.cedit * edit_loss + settings.cloc * loc_kl
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MEND training: non-finite loss {loss.item()} at step {step} (zsRE training record {example.record})")
        (loss / settings.accumulate_bs).backward()
        last_loss = {"train_last_loss": loss.item()}
        if (step + 1) % settings.accumulate_bs == 0:
            torch.nn.utils.clip_grad_norm_([*editor.hyper_parameters(), editor.edit_lrs], settings.grad_clip, error_if_nonfinite=True)
            optimiser.step()
            lr_optimiser.step()
            optimiser.zero_grad()
            lr_optimiser.zero_grad()
    optimiser.zero_grad()
    lr_optimiser.zero_grad()
    editor.eval()
    return {
        "train_steps": len(order),
        "train_updates": len(order) // settings.accumulate_bs if optimise else 0,
        "train_seconds": time.perf_counter() - started,
        **last_loss,
        **{f"edit_lr_{i}": float(lr) for i, lr in enumerate(editor.edit_lrs.tolist())},
    }


def _order(count: int, steps: int, seed: int) -> list[int]:
    """`steps` record indices: seeded shuffles of the training records, one epoch after another."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps:
        order.extend(torch.randperm(count, generator=generator).tolist())
    return order[:steps]


def validate(lm: LoadedModel, editor: MendEditor, modules: list[str], start: int, val: list[Example]) -> dict[str, float]:
    """Mean figures of editing each validation record alone, statistics frozen: `val_<figure>`."""
    totals: dict[str, float] = {}
    for example in progress(val, "MEND validation", lambda e: str(e.record)):
        _, _, figures = edit_step(lm, editor, modules, start, example, training=False)
        for name, value in figures.items():
            totals[name] = totals.get(name, 0.0) + value
    result = {f"val_{name}": value / len(val) for name, value in totals.items()}
    if not all(math.isfinite(value) for value in result.values()):
        raise FloatingPointError(f"MEND validation gave non-finite figures: {result}")
    return result
