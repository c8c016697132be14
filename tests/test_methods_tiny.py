"""ROME and FT on random tiny models: the maths of each update, not its efficacy."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

from fixtures_models import (  # noqa: F401
    changed_tensors,
    single_thread,
    snapshot,
    tiny_gpt2_lm,
    tiny_gptj_lm,
    tiny_lm,
)
from kepitfalls.deltas import ComposedDelta, DenseDelta, LowRankDelta
from kepitfalls.hidden.hooks import capture
from kepitfalls.hidden.partial import hidden_from_layer, normed_hidden, residual_entering
from kepitfalls.hidden.value import optimise_output
from kepitfalls.methods import method_class
from kepitfalls.methods.FT import FineTune, FTHparams
from kepitfalls.methods.ROME import ROME, ROMEHparams
from kepitfalls.methods.base import Artifacts
from kepitfalls.models.adapters import get_module, linear_weight
from kepitfalls.models.loading import LoadedModel
from kepitfalls.prepare.stats import check_determined, load_second_moment, save_stats, second_moments, stats_file
from kepitfalls.requests import EditRequest
from kepitfalls.scoring.primitives import mean_target_prob
from kepitfalls.tokens import Batch, subject_last_index

ROME_HPARAMS = ROMEHparams(
    layer=1, v_num_grad_steps=5, v_lr=0.5, v_loss_layer=-1, v_weight_decay=0.5,
    clamp_norm_factor=4, kl_factor=0.0625, compute_dtype="float32", mom2_adjustment=False,
)
EIFFEL = EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome, Italy", "Paris")
DARRIEUX = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Dutch", "French")


def key_and_output(lm: LoadedModel, layer: int, request: EditRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """k* and the module output at the subject's last token of the bare prompt."""
    ids, index = subject_last_index(lm.tokenizer, request.prompt, request.subject)
    batch = Batch.from_ids([ids], lm.tokenizer.pad_token_id, lm.model.device)
    keys, outputs = capture(lm, lm.arch.mlp_out.format(layer), batch, want_output=True)
    return keys[0, index], outputs[0, index]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


# ------------------------------------------------------------------------------------------------ ROME


def test_rome_update_maps_key_to_optimised_value(tiny_lm: LoadedModel) -> None:
    layer = ROME_HPARAMS.layer
    module = tiny_lm.arch.mlp_out.format(layer)
    before = snapshot(tiny_lm.model)
    delta = ROME(ROME_HPARAMS, Artifacts()).edit(tiny_lm, [EIFFEL])
    assert changed_tensors(tiny_lm.model, before) == set()  # edit leaves the model as it found it

    v_star = optimise_value(tiny_lm, layer, EIFFEL, ROME_HPARAMS, ["{}"])
    assert torch.equal(v_star, optimise_value(tiny_lm, layer, EIFFEL, ROME_HPARAMS, ["{}"]))  # deterministic
    k_star, w_k = key_and_output(tiny_lm, layer, EIFFEL)
    assert float((w_k - v_star).norm() / v_star.norm()) > 1e-2  # the edit has something to do

    delta.apply(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == {f"{module}.weight"}
    k_after, out_after = key_and_output(tiny_lm, layer, EIFFEL)
    assert torch.equal(k_after, k_star)  # the key is upstream of the edited weight
    assert float((out_after - v_star).norm() / v_star.norm()) < 1e-4
    delta.revert(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == set()


def test_rome_delta_is_rank_one_on_one_module(tiny_lm: LoadedModel) -> None:
    module = tiny_lm.arch.mlp_out.format(ROME_HPARAMS.layer)
    delta = ROME(ROME_HPARAMS, Artifacts()).edit(tiny_lm, [EIFFEL])
    assert isinstance(delta, LowRankDelta) and list(delta.factors) == [module]
    u, v = delta.factors[module]
    out_dim, in_dim = linear_weight(tiny_lm.model, module).shape
    assert tuple(u.shape) == (out_dim, 1) and tuple(v.shape) == (in_dim, 1)
    weight_before = linear_weight(tiny_lm.model, module).detach().clone()
    delta.apply(tiny_lm.model)
    change = (linear_weight(tiny_lm.model, module) - weight_before).double()
    delta.revert(tiny_lm.model)
    singular = torch.linalg.svdvals(change)  # rank one up to the float32 rounding of (w + d) - w
    assert float(singular[1] / singular[0]) < 1e-4
    # Without mom2 adjustment the right factor is the unit key itself (template "{}": the bare prompt).
    k_star, _ = key_and_output(tiny_lm, ROME_HPARAMS.layer, EIFFEL)
    assert float(v[:, 0].norm()) == pytest.approx(1.0, abs=1e-5)
    assert _cosine(v[:, 0], k_star) == pytest.approx(1.0, abs=1e-6)


def test_second_moments_depend_on_shards_not_on_where_the_runs_are_computed(tiny_lm: LoadedModel) -> None:
    """Runs of whole batches, summed in order wherever they are computed (here: last run first); 3 runs of
    batches that do not divide the corpus evenly give the one-run statistic up to float64 rounding."""
    module = tiny_lm.arch.mlp_out.format(ROME_HPARAMS.layer)
    corpus = torch.randint(2, len(tiny_lm.tokenizer), (27, 16), generator=torch.Generator().manual_seed(1))
    seen: list[tuple[int, int]] = []

    def backwards(run, spans):  # type: ignore[no-untyped-def]
        seen.extend(spans)
        return [run(tiny_lm, span) for span in reversed(spans)][::-1]

    here, count = second_moments(tiny_lm, [module], corpus, batch_size=4, shards=3)
    fanned, fanned_count = second_moments(tiny_lm, [module], corpus, batch_size=4, shards=3, map_runs=backwards)
    assert seen == [(0, 8), (8, 16), (16, 27)] and count == fanned_count == 27 * 16
    assert torch.equal(here[module], fanned[module])
    one_run, _ = second_moments(tiny_lm, [module], corpus, batch_size=4)
    torch.testing.assert_close(here[module], one_run[module], rtol=1e-10, atol=1e-12 * float(one_run[module].abs().max()))


def test_rome_mom2_adjustment_whitens_the_key(tiny_lm: LoadedModel, tmp_path: Path) -> None:
    layer = ROME_HPARAMS.layer
    module = tiny_lm.arch.mlp_out.format(layer)
    corpus = torch.randint(2, len(tiny_lm.tokenizer), (24, 64), generator=torch.Generator().manual_seed(0))
    shallower = tiny_lm.arch.mlp_out.format(layer - 1)
    moments, count = second_moments(tiny_lm, [module, shallower], corpus, batch_size=8)
    mom2 = moments[module]
    assert count == 24 * 64 and mom2.dtype == torch.float64
    # The statistic is what it says: the uncentred second moment of the module inputs over every token,
    # and one pass for two layers gives what a pass per layer gives.
    for name in (module, shallower):
        keys, _ = capture(tiny_lm, name, Batch(corpus[:8], torch.ones_like(corpus[:8])))
        partial = keys.reshape(-1, keys.shape[-1]).double()
        torch.testing.assert_close(partial.T @ partial / partial.shape[0], second_moments(tiny_lm, [name], corpus[:8], 4)[0][name])
        torch.testing.assert_close(moments[name], second_moments(tiny_lm, [name], corpus, 8)[0][name])
    assert int(torch.linalg.matrix_rank(mom2)) == mom2.shape[0]

    stats_dir = tmp_path / "stats"
    save_stats(stats_file(stats_dir, layer), mom2.float(), count, {"corpus": "random-ids"})
    hparams = ROME_HPARAMS.model_copy(update={"mom2_adjustment": True})
    rome = ROME(hparams, Artifacts(stats_dir=stats_dir))
    assert rome.upstream_files() == [stats_file(stats_dir, layer)]
    delta = rome.edit(tiny_lm, [EIFFEL])
    u_right, u = delta.factors[module]
    k_star, _ = key_and_output(tiny_lm, layer, EIFFEL)
    whitened = torch.linalg.solve(mom2.float().double(), k_star.double())
    assert _cosine(u[:, 0], whitened) == pytest.approx(1.0, abs=1e-4)
    assert _cosine(u[:, 0], k_star) < 0.999  # and it is not just the key
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-5)
    # The rank-one update still sends k* to v*.
    v_star = optimise_value(tiny_lm, layer, EIFFEL, hparams, ["{}"])
    delta.apply(tiny_lm.model)
    _, out_after = key_and_output(tiny_lm, layer, EIFFEL)
    delta.revert(tiny_lm.model)
    assert float((out_after - v_star).norm() / v_star.norm()) < 1e-4


def test_second_moment_loader_serves_c_and_its_inverse_and_sees_rewrites(tmp_path: Path) -> None:
    """ROME (C⁻¹) and MEMIT (C) read one cached loader; a rewritten file is read again, not served stale."""
    path = stats_file(tmp_path, 3)
    first = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    save_stats(path, first, 10, {"corpus": "hand"})
    torch.testing.assert_close(load_second_moment(path), first)
    torch.testing.assert_close(load_second_moment(path, inverse=True), torch.tensor([[0.6, -0.2], [-0.2, 0.4]]))
    assert load_second_moment(path, inverse=True) is load_second_moment(path, inverse=True)
    second = torch.tensor([[4.0, 0.0], [0.0, 5.0]])
    time.sleep(0.01)
    save_stats(path, second, 10, {"corpus": "hand"})
    torch.testing.assert_close(load_second_moment(path, inverse=True), torch.tensor([[0.25, 0.0], [0.0, 0.2]]))


def test_a_corpus_narrower_than_the_keys_is_refused_before_and_after_the_stats_stage(tmp_path: Path) -> None:
    """Fewer tokens than a key is wide leave C singular: the stats stage names the parameter to raise, and a
    stale file of that kind is not read."""
    check_determined(1536, {"model.layers.5.mlp.down_proj": 1536})
    with pytest.raises(ValueError, match=r"stats\.corpus\.tokens: the corpus has 768 tokens, fewer than the 1,536-wide inputs of model\.layers\.4"):
        check_determined(768, {"model.layers.4.mlp.down_proj": 1536, "model.layers.5.mlp.down_proj": 1536})
    path = stats_file(tmp_path, 3)
    save_stats(path, torch.tensor([[1.0, 1.0], [1.0, 1.0]]), 1, {"corpus": "hand"})
    for inverse in (False, True):  # MEMIT reads C, ROME C⁻¹
        with pytest.raises(ValueError, match="from 1 tokens, fewer than its width 2"):
            load_second_moment(path, inverse=inverse)


CONTEXT_TEMPLATES = ["{}", "The Colosseum is in Rome. {}", "Hello. {}", "Question: who wrote Hamlet? Answer: William. {}"]


def test_optimise_value_starts_from_the_unedited_output(tiny_lm: LoadedModel) -> None:
    """With one step no update is taken, so v* is v₀: the module output at the subject's last token."""
    _, w_k = key_and_output(tiny_lm, ROME_HPARAMS.layer, EIFFEL)
    v_zero = optimise_value(tiny_lm, ROME_HPARAMS.layer, EIFFEL, ROME_HPARAMS.model_copy(update={"v_num_grad_steps": 1}), ["{}"])
    torch.testing.assert_close(v_zero, w_k, rtol=0, atol=1e-6)
    v_star = optimise_value(tiny_lm, ROME_HPARAMS.layer, EIFFEL, ROME_HPARAMS, CONTEXT_TEMPLATES)
    assert float((v_star - w_k).norm()) <= ROME_HPARAMS.clamp_norm_factor * float(w_k.norm()) * (1 + 1e-5)


def test_optimise_value_first_step_follows_the_nll_gradient(tiny_lm: LoadedModel) -> None:
    """One Adam step from δ = 0 moves every coordinate by -lr·sign(∂NLL/∂δ).

    The gradient is computed independently: a full forward pass of prompt ⊕ target[:-1] with δ added to
    the MLP output at the subject's last token, the mean NLL of the target tokens read from the logits.
    """
    layer, lr = ROME_HPARAMS.layer, 0.01
    hparams = ROME_HPARAMS.model_copy(update={"v_num_grad_steps": 2, "v_lr": lr, "kl_factor": 0.0, "v_weight_decay": 0.0,
                                              "clamp_norm_factor": 1e6})
    tok = tiny_lm.tokenizer
    ids, index = subject_last_index(tok, EIFFEL.prompt, EIFFEL.subject)
    target = tok(" " + EIFFEL.target_new, add_special_tokens=False)["input_ids"]
    assert len(target) > 1
    _, v_zero = key_and_output(tiny_lm, layer, EIFFEL)
    delta = torch.zeros_like(v_zero, requires_grad=True)

    def add_delta(_module, _args, output):
        output = output.clone()
        output[0, index] += delta
        return output

    handle = get_module(tiny_lm.model, tiny_lm.arch.mlp.format(layer)).register_forward_hook(add_delta)
    try:
        logits = tiny_lm.model(torch.tensor([ids + target[:-1]])).logits[0]
    finally:
        handle.remove()
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -torch.stack([log_probs[len(ids) - 1 + j, t] for j, t in enumerate(target)]).mean()
    (grad,) = torch.autograd.grad(nll, delta)

    step = optimise_value(tiny_lm, layer, EIFFEL, hparams, ["{}"]) - v_zero
    clear = grad.abs() > 1e-5
    assert int(clear.sum()) > 0.5 * grad.numel()
    torch.testing.assert_close(step[clear], -lr * grad.sign()[clear], rtol=0, atol=lr * 1e-2)


def optimise_value(lm: LoadedModel, layer: int, request: EditRequest, hparams: ROMEHparams, templates: list[str]) -> torch.Tensor:
    """ROME's v*: the shared optimiser applied to the block's MLP output."""
    return optimise_output(lm, lm.arch.mlp.format(layer), layer, request, hparams, templates)


def reference_value(lm: LoadedModel, layer: int, request: EditRequest, hparams: ROMEHparams, templates: list[str]) -> torch.Tensor:
    """ROME's v* written out plainly: one prompt at a time, full forward passes, loss read from the logits.

    Only for `v_loss_layer` = the last layer (the logits are then the model's own).
    """
    tok = lm.tokenizer
    target = tok(" " + request.target_new, add_special_tokens=False)["input_ids"]
    rewrites = [subject_last_index(tok, t.format(request.prompt), request.subject) for t in templates]
    kl_ids, kl_index = subject_last_index(tok, "{} is a", request.subject)
    mlp = get_module(lm.model, lm.arch.mlp.format(layer))

    def logits_with(delta: torch.Tensor | None, ids: list[int], index: int) -> torch.Tensor:
        def hook(_module, _args, output):
            output = output.clone()
            output[0, index] += delta
            return output

        handle = mlp.register_forward_hook(hook) if delta is not None else None
        try:
            return lm.model(torch.tensor([ids])).logits[0].float()
        finally:
            if handle is not None:
                handle.remove()

    v_zero = key_and_output(lm, layer, EditRequest(templates[0].format(request.prompt), request.subject, "x"))[1]
    delta = torch.zeros_like(v_zero, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=hparams.v_lr)
    kl_start = torch.log_softmax(logits_with(None, kl_ids, kl_index)[kl_index], -1)
    for step in range(hparams.v_num_grad_steps):
        optimiser.zero_grad()
        nlls = []
        for ids, index in rewrites:
            log_probs = torch.log_softmax(logits_with(delta, ids + target[:-1], index), -1)
            nlls.append(-torch.stack([log_probs[len(ids) - 1 + j, t] for j, t in enumerate(target)]).mean())
        kl_now = torch.log_softmax(logits_with(delta, kl_ids, kl_index)[kl_index], -1)
        kl = (kl_now.exp() * (kl_now - kl_start)).sum()  # KL(P_δ ‖ P_0) at the KL prompt's subject token
        loss = torch.stack(nlls).mean() + hparams.kl_factor * kl
        loss = loss + hparams.v_weight_decay * delta.norm() / v_zero.norm() ** 2
        if loss.item() < 5e-2 or step == hparams.v_num_grad_steps - 1:
            break
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            limit = hparams.clamp_norm_factor * v_zero.norm()
            if delta.norm() > limit:
                delta.mul_(limit / delta.norm())
    return (v_zero + delta).detach()


# 1e4: the KL term matters; it also multiplies the two paths' float32 rounding in the KL gradient by 1e4
# before Adam normalises the step, so after 6 steps tiny GPT-J's v* differ by 1.05e-4 (relative) on an AMD EPYC
# (under 1e-4 on the Intel machines before, 2.5e-6 for tiny Llama; the other settings ~1e-7). A wrong term,
# position or clamp moves v* by far more than 1e-3.
@pytest.mark.parametrize("kl_factor,clamp,tolerance", [(0.0625, 4.0, 1e-4), (1e4, 4.0, 1e-3), (1.0, 0.05, 1e-4)])
def test_optimise_value_matches_plain_reference(tiny_lm: LoadedModel, kl_factor: float, clamp: float, tolerance: float) -> None:
    """NLL over every template, KL at the "{} is a" prompt, weight decay and the norm clamp, all as written."""
    hparams = ROME_HPARAMS.model_copy(update={"v_lr": 0.05, "kl_factor": kl_factor, "clamp_norm_factor": clamp, "v_num_grad_steps": 6})
    templates = CONTEXT_TEMPLATES[:3]
    got = optimise_value(tiny_lm, 1, DARRIEUX, hparams, templates)
    want = reference_value(tiny_lm, 1, DARRIEUX, hparams, templates)
    assert float((got - want).norm() / want.norm()) < tolerance
    v_zero = key_and_output(tiny_lm, 1, DARRIEUX)[1]
    assert float((want - v_zero).norm() / v_zero.norm()) > 1e-2  # several real steps were taken


# Not layer == loss_layer: there δ cannot reach the target positions, the NLL gradient is float noise, and
# Adam's normalised steps amplify that noise differently on the two paths.
@pytest.mark.parametrize("layer,loss_layer", [(1, -1), (0, 2), (1, 2)])
def test_optimise_value_same_with_and_without_cached_residual(tiny_lm: LoadedModel, layer: int, loss_layer: int) -> None:
    """The shortcut for GPT-J/Llama (restart from the edited layer, prefixes cached) gives the v* of full passes.

    Forcing `embeds_are_residual=False` makes optimise_value take the plain full-forward path (GPT-2's).
    Includes a one-token subject at position 0 (nothing before the subject) and prompts of many lengths.
    """
    full = dataclasses.replace(tiny_lm, arch=dataclasses.replace(tiny_lm.arch, embeds_are_residual=False))
    hparams = ROME_HPARAMS.model_copy(update={"layer": layer, "v_loss_layer": loss_layer})
    for request in (EIFFEL, EditRequest("{} was founded in", "The", "Japan")):
        cached = optimise_value(tiny_lm, layer, request, hparams, CONTEXT_TEMPLATES)
        plain = optimise_value(full, layer, request, hparams, CONTEXT_TEMPLATES)
        assert float((cached - plain).norm() / plain.norm()) < 1e-5


def test_bfloat16_compute_runs_the_optimisation_under_autocast_and_returns_float32(tiny_lm: LoadedModel) -> None:
    """`compute_dtype: bfloat16` changes the passes (v* moves in its low bits) but not the result's dtype or
    direction: v* stays float32 and within 1% of the float32 optimisation's."""
    hparams = ROME_HPARAMS.model_copy(update={"v_lr": 0.05, "v_num_grad_steps": 6})
    exact = optimise_value(tiny_lm, 1, DARRIEUX, hparams, CONTEXT_TEMPLATES[:3])
    fast = optimise_value(tiny_lm, 1, DARRIEUX, hparams.model_copy(update={"compute_dtype": "bfloat16"}), CONTEXT_TEMPLATES[:3])
    assert fast.dtype == exact.dtype == torch.float32
    assert 0 < float((fast - exact).norm() / exact.norm()) < 1e-2


def test_rome_nll_descent_raises_target_probability(tiny_lm: LoadedModel) -> None:
    """Pure NLL (no KL, no decay), small steps: the rewritten prompt's P̄(target) goes up, for each request."""
    hparams = ROME_HPARAMS.model_copy(update={"v_lr": 0.05, "kl_factor": 0.0, "v_weight_decay": 0.0})
    for request in (EIFFEL, DARRIEUX):
        prompts, targets = [request.rewrite_prompt], [request.target_new]
        before = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)[0]
        delta = ROME(hparams).edit(tiny_lm, [request])
        delta.apply(tiny_lm.model)
        after = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)[0]
        delta.revert(tiny_lm.model)
        assert after > before * 1.01


def test_rome_with_context_templates(tiny_lm: LoadedModel, tmp_path: Path) -> None:
    """u is the unit template-averaged key; the update still sends the bare prompt's key to v*."""
    layer = ROME_HPARAMS.layer
    module = tiny_lm.arch.mlp_out.format(layer)
    templates_file = tmp_path / "templates.json"
    templates_file.write_text(json.dumps({"groups": [CONTEXT_TEMPLATES[:1], CONTEXT_TEMPLATES[1:]]}), encoding="utf-8")
    rome = ROME(ROME_HPARAMS, Artifacts(templates_file=templates_file))
    assert rome.upstream_files() == [templates_file]
    delta = rome.edit(tiny_lm, [EIFFEL])
    _, u = delta.factors[module]
    keys = [key_and_output(tiny_lm, layer, EditRequest(t.format(EIFFEL.prompt), EIFFEL.subject, "x"))[0] for t in CONTEXT_TEMPLATES]
    mean_key = torch.stack(keys).mean(0)
    assert _cosine(u[:, 0], mean_key) == pytest.approx(1.0, abs=1e-6)
    assert _cosine(u[:, 0], keys[0]) < 1 - 1e-4  # the average, not the bare prompt's key
    v_star = optimise_value(tiny_lm, layer, EIFFEL, ROME_HPARAMS, CONTEXT_TEMPLATES)
    delta.apply(tiny_lm.model)
    _, out_after = key_and_output(tiny_lm, layer, EIFFEL)
    delta.revert(tiny_lm.model)
    assert float((out_after - v_star).norm() / v_star.norm()) < 1e-4


def test_rome_on_gpt2_without_cached_residual(tiny_gpt2_lm: LoadedModel) -> None:
    """GPT-2: Conv1D weight (in, out) and no restart from a cached residual; the update still maps k* to v*."""
    lm, layer = tiny_gpt2_lm, 0
    hparams = ROME_HPARAMS.model_copy(update={"layer": layer})
    module = lm.arch.mlp_out.format(layer)
    assert residual_entering(lm, layer, Batch.from_ids([[1, 2, 3]], 0, lm.model.device)) is None
    before = snapshot(lm.model)
    delta = ROME(hparams).edit(lm, [EIFFEL])
    assert changed_tensors(lm.model, before) == set()
    v_star = optimise_value(lm, layer, EIFFEL, hparams, ["{}"])
    _, w_k = key_and_output(lm, layer, EIFFEL)
    assert float((w_k - v_star).norm() / v_star.norm()) > 1e-2
    delta.apply(lm.model)
    assert changed_tensors(lm.model, before) == {f"{module}.weight"}
    _, out_after = key_and_output(lm, layer, EIFFEL)
    delta.revert(lm.model)
    assert float((out_after - v_star).norm() / v_star.norm()) < 1e-4
    assert changed_tensors(lm.model, before) == set()


def test_rome_mom2_without_stats_raises(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="statistics"):
        ROME(ROME_HPARAMS.model_copy(update={"mom2_adjustment": True}), Artifacts()).edit(tiny_gptj_lm, [EIFFEL])


def test_rome_edit_batch_refuses_several_requests(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError):
        ROME(ROME_HPARAMS).edit_batch(tiny_gptj_lm, [EIFFEL, DARRIEUX])
    with pytest.raises(ValueError):
        ROME(ROME_HPARAMS).edit(tiny_gptj_lm, [])


@pytest.mark.parametrize("start,stop", [(0, 4), (1, 4), (2, 4), (1, 3), (3, 4)])
def test_truncated_forward_equals_full_model(tiny_lm: LoadedModel, start: int, stop: int) -> None:
    tok = tiny_lm.tokenizer
    sequences = [tok("The Eiffel Tower is located in Paris")["input_ids"], tok("Rome")["input_ids"]]
    batch = Batch.from_ids(sequences, tok.pad_token_id, tiny_lm.model.device)
    residual = residual_entering(tiny_lm, start, batch)
    assert residual is not None
    hidden = hidden_from_layer(tiny_lm, residual, batch.attention_mask, start, stop)
    with torch.no_grad():
        full = tiny_lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        expected = full.hidden_states[-1] if stop == 4 else get_module(tiny_lm.model, tiny_lm.arch.final_norm)(full.hidden_states[stop])
    real = batch.attention_mask.bool()
    torch.testing.assert_close(hidden[real], expected[real], rtol=0, atol=1e-6)
    assert len(get_module(tiny_lm.model, tiny_lm.arch.layers)) == 4  # blocks restored afterwards
    torch.testing.assert_close(normed_hidden(tiny_lm, None, batch, start, stop)[real], expected[real], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------- sequential editing


def test_sequential_rome_composes_on_the_edited_model(tiny_lm: LoadedModel) -> None:
    before = snapshot(tiny_lm.model)
    rome = ROME(ROME_HPARAMS, Artifacts())
    composed = rome.edit(tiny_lm, [EIFFEL, DARRIEUX])
    assert changed_tensors(tiny_lm.model, before) == set()
    assert isinstance(composed, ComposedDelta) and len(composed.parts) == 2
    first, second = composed.parts
    assert not first.applied and not second.applied
    module = tiny_lm.arch.mlp_out.format(ROME_HPARAMS.layer)

    alone_first = rome.edit_batch(tiny_lm, [EIFFEL])
    alone_second = rome.edit_batch(tiny_lm, [DARRIEUX])  # on the unedited model
    first.apply(tiny_lm.model)
    on_edited = rome.edit_batch(tiny_lm, [DARRIEUX])
    first.revert(tiny_lm.model)
    for got, want in zip(first.factors[module], alone_first.factors[module]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    for got, want in zip(second.factors[module], on_edited.factors[module]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(second.factors[module][0], alone_second.factors[module][0], rtol=1e-3, atol=1e-5)

    composed.apply(tiny_lm.model)
    # After both parts, the second request's key maps to its v* computed on the first-edited model.
    first_state = snapshot(tiny_lm.model)
    composed.revert(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == set()
    composed.apply(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, first_state) == set()
    composed.revert(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == set()


def test_method_class_lookup() -> None:
    assert method_class("ROME") is ROME and method_class("FT") is FineTune
    with pytest.raises(NotImplementedError, match="NO-SUCH-METHOD"):
        method_class("NO-SUCH-METHOD")


# -------------------------------------------------------------------------------------------------- FT


def ft_hparams(objective: str, norm_constraint: float | None = None) -> FTHparams:
    return FTHparams(layers=[2], num_steps=5, lr=1e-2, weight_decay=0.0, objective=objective, norm_constraint=norm_constraint)


def _mlp_out_params(lm: LoadedModel, layer: int) -> set[str]:
    prefix = lm.arch.mlp_out.format(layer)
    return {name for name, _ in lm.model.named_parameters() if name.startswith(prefix + ".")}


@pytest.mark.parametrize("objective", ["prompt_last", "target_new"])
def test_ft_touches_only_the_layer_and_raises_target_probability(tiny_lm: LoadedModel, objective: str) -> None:
    requests = [EIFFEL]
    before = snapshot(tiny_lm.model)
    prompts, targets = [r.rewrite_prompt for r in requests], [r.target_new for r in requests]
    p_before = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
    delta = FineTune(ft_hparams(objective)).edit(tiny_lm, requests)
    assert changed_tensors(tiny_lm.model, before) == set()  # bit-identical after edit
    assert all(not p.requires_grad for p in tiny_lm.model.parameters())
    assert isinstance(delta, DenseDelta) and not delta.indices
    touched = _mlp_out_params(tiny_lm, 2)
    assert set(delta.changes) == touched
    delta.apply(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == touched
    p_after = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
    delta.revert(tiny_lm.model)
    assert changed_tensors(tiny_lm.model, before) == set()
    assert p_after[0] > p_before[0] * 1.05


@pytest.mark.parametrize("objective", ["prompt_last", "target_new"])
def test_ft_norm_constraint_bounds_every_change(tiny_lm: LoadedModel, objective: str) -> None:
    eps = 1e-3
    free = FineTune(ft_hparams(objective)).edit(tiny_lm, [EIFFEL])
    bounded = FineTune(ft_hparams(objective, eps)).edit(tiny_lm, [EIFFEL])
    params = dict(tiny_lm.model.named_parameters())
    assert max(float(c.abs().max()) for c in free.changes.values()) > 10 * eps  # the bound binds
    for name, change in bounded.changes.items():
        original = params[name].detach()
        # L∞ within ε, up to the float32 rounding of (w ± ε) - w.
        slack = 2 * torch.finfo(torch.float32).eps * (original.abs() + eps)
        assert bool((change.abs() <= eps + slack).all()), name
        assert float(change.abs().max()) > 0.99 * eps


def test_ft_batch_edit_gives_one_dense_delta(tiny_lm: LoadedModel) -> None:
    requests = [EIFFEL, DARRIEUX]
    before = snapshot(tiny_lm.model)
    prompts, targets = [r.rewrite_prompt for r in requests], [r.target_new for r in requests]
    p_before = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
    delta = FineTune(ft_hparams("target_new")).edit(tiny_lm, requests)
    assert type(delta) is DenseDelta and set(delta.changes) == _mlp_out_params(tiny_lm, 2)
    assert changed_tensors(tiny_lm.model, before) == set()
    delta.apply(tiny_lm.model)
    p_after = mean_target_prob(tiny_lm.model, tiny_lm.tokenizer, prompts, targets)
    delta.revert(tiny_lm.model)
    assert all(a > b for a, b in zip(p_after, p_before))
    # A batch of two is not the delta of either request alone.
    single = FineTune(ft_hparams("target_new")).edit(tiny_lm, [EIFFEL])
    name = f"{tiny_lm.arch.mlp_out.format(2)}.weight"
    assert not torch.allclose(single.changes[name], delta.changes[name])


@pytest.mark.parametrize("objective", ["prompt_last", "target_new"])
def test_ft_first_step_follows_the_objective_gradient(tiny_lm: LoadedModel, objective: str) -> None:
    """One Adam step moves every tuned value by -lr·sign(∂loss/∂w), with the loss computed independently.

    prompt_last: every target token's log-probability at the prompt's last position (bag of tokens);
    target_new: teacher-forced log-probabilities of the target tokens. Both averaged per request, then
    over requests.
    """
    lr, tok = 1e-3, tiny_lm.tokenizer
    requests = [EIFFEL, DARRIEUX]
    hparams = ft_hparams(objective).model_copy(update={"num_steps": 1, "lr": lr})
    names = sorted(_mlp_out_params(tiny_lm, 2))
    params = [tiny_lm.model.get_parameter(n) for n in names]
    for p in params:
        p.requires_grad_(True)
    try:
        losses = []
        for request in requests:
            prefix = tok(request.rewrite_prompt)["input_ids"]
            target = tok(" " + request.target_new, add_special_tokens=False)["input_ids"]
            if objective == "prompt_last":
                row = torch.log_softmax(tiny_lm.model(torch.tensor([prefix])).logits[0, -1].float(), -1)
                picked = row[target]
            else:
                logits = tiny_lm.model(torch.tensor([prefix + target])).logits[0]
                rows = torch.log_softmax(logits.float(), -1)
                picked = torch.stack([rows[len(prefix) - 1 + j, t] for j, t in enumerate(target)])
            losses.append(-picked.mean())
        grads = torch.autograd.grad(torch.stack(losses).mean(), params)
    finally:
        for p in params:
            p.requires_grad_(False)
    delta = FineTune(hparams).edit(tiny_lm, requests)
    for name, grad in zip(names, grads):
        clear = grad.abs() > 1e-5  # Adam's ε (1e-8) is negligible there
        assert int(clear.sum()) > 0.5 * grad.numel(), name
        torch.testing.assert_close(delta.changes[name][clear], -lr * grad.sign()[clear], rtol=0, atol=lr * 1e-2)


def test_ft_leaves_no_gradients_on_the_model(tiny_gptj_lm: LoadedModel) -> None:
    FineTune(ft_hparams("target_new")).edit(tiny_gptj_lm, [EIFFEL])
    assert [n for n, p in tiny_gptj_lm.model.named_parameters() if p.grad is not None] == []


def test_ft_unknown_objective(tiny_gptj_lm: LoadedModel) -> None:
    with pytest.raises(ValueError, match="objective"):
        FineTune(ft_hparams("bag_of_words")).edit(tiny_gptj_lm, [EIFFEL])


# --------------------------------------------------------------------------------- subject_last_index

SUBJECT_CASES = [
    ("{} is located in the city of", "The Eiffel Tower"),
    ("The mother tongue of {} is", "Danielle Darrieux"),
    ("Where is {}? It is in", "Rome"),
    ("The mother tongue of {} is", "Thomas Joannes Stieltjes"),
    ("Question: who created {}, the phone? Answer:", "Apple A5"),
    ("Some context. {}", "Toyota"),
]


@pytest.mark.parametrize("template,subject", SUBJECT_CASES)
def test_subject_last_index(tiny_lm: LoadedModel, template: str, subject: str) -> None:
    tok = tiny_lm.tokenizer
    ids, index = subject_last_index(tok, template, subject)
    text = template.format(subject)
    assert ids == tok(text)["input_ids"]  # BOS included for Llama
    start = template.index("{}")
    head, tail = text[: start + len(subject)], text[start + len(subject) :]
    assert tok.decode(ids[: index + 1], skip_special_tokens=True) == head  # the subject ends at this token
    assert tok.decode(ids[index + 1 :], skip_special_tokens=True) == tail
    piece = tok.decode([ids[index]])
    assert piece and subject.endswith(piece.lstrip(" "))
    if tiny_lm.name == "tiny-llama":
        assert ids[0] == tok.bos_token_id and index >= 1


def test_subject_last_index_needs_exactly_one_slot(tiny_lm: LoadedModel) -> None:
    with pytest.raises(ValueError):
        subject_last_index(tiny_lm.tokenizer, "The Eiffel Tower is in", "The Eiffel Tower")
    with pytest.raises(ValueError):
        subject_last_index(tiny_lm.tokenizer, "{} and {}", "Rome")
