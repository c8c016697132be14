"""Delta codecs (exact apply, bit-exact revert), the content key and the on-disk store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures_models import (  # noqa: F401
    build_tiny,
    changed_tensors,
    single_thread,
    snapshot,
    tiny_gpt2_lm,
    tiny_gptj_lm,
)
import kepitfalls.tensorfile as tensorfile
from kepitfalls.deltas import ComposedDelta, DeltaStore, DenseDelta, LowRankDelta, MemoryDelta, delta_key
from kepitfalls.deltas.codecs import MEMORY_ATTRIBUTE, ROUTER_ATTRIBUTE, NoRouterError
from kepitfalls.models.adapters import get_module, linear_weight
from kepitfalls.models.loading import LoadedModel

FC_OUT_1 = "transformer.h.1.mlp.fc_out"  # tiny GPT-J: weight (64, 256), bias (64,)
FC_OUT_2 = "transformer.h.2.mlp.fc_out"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_rank(seed: int = 1, rank: int = 2, scale: float = 1.0, module: str = FC_OUT_1) -> LowRankDelta:
    g = _gen(seed)
    return LowRankDelta({module: (scale * torch.randn(64, rank, generator=g), torch.randn(256, rank, generator=g))})


def dense_whole(seed: int = 2, scale: float = 1.0) -> DenseDelta:
    g = _gen(seed)
    return DenseDelta({
        f"{FC_OUT_1}.weight": scale * torch.randn(64, 256, generator=g),
        f"{FC_OUT_2}.bias": scale * torch.randn(64, generator=g),
    })


KN_COLUMNS = torch.tensor([3, 7, 200])


def dense_columns(seed: int = 3, scale: float = 1.0) -> DenseDelta:
    """KN-style: change only some neurons, i.e. columns (dim 1) of the output projection's weight."""
    g = _gen(seed)
    return DenseDelta(
        {f"{FC_OUT_1}.weight": scale * torch.randn(64, len(KN_COLUMNS), generator=g)},
        {f"{FC_OUT_1}.weight": (1, KN_COLUMNS)},
    )


def memory(method: str = "IKE", tag: str = "a") -> MemoryDelta:
    return MemoryDelta(method, [{"prompt": f"fact {tag}", "target": "Paris", "n": 1}], {"keys": torch.arange(6.0).view(2, 3)})


def reading_memory(lm: LoadedModel) -> LoadedModel:
    """The model with a stand-in router (`MemoryDelta.apply` refuses a model that has none to read its memory)."""
    setattr(lm.model, ROUTER_ATTRIBUTE, object())
    return lm


# ---------------------------------------------------------------------------------------------- apply


def test_low_rank_apply_adds_u_vT_exactly_to_one_weight(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    before = snapshot(model)
    delta = low_rank()
    delta.apply(model)
    assert delta.applied
    assert changed_tensors(model, before) == {f"{FC_OUT_1}.weight"}
    u, v = delta.factors[FC_OUT_1]
    assert torch.equal(get_module(model, FC_OUT_1).weight, before[f"{FC_OUT_1}.weight"] + u @ v.T)


def test_dense_apply_whole_tensors(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    before = snapshot(model)
    delta = dense_whole()
    delta.apply(model)
    assert changed_tensors(model, before) == set(delta.changes)
    for name, change in delta.changes.items():
        assert torch.equal(model.get_parameter(name), before[name] + change)


def test_dense_apply_column_slices(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    name = f"{FC_OUT_1}.weight"
    before = snapshot(model)
    delta = dense_columns()
    delta.apply(model)
    assert changed_tensors(model, before) == {name}
    weight, original = model.get_parameter(name), before[name]
    assert torch.equal(weight[:, KN_COLUMNS], original[:, KN_COLUMNS] + delta.changes[name])
    untouched = torch.ones(weight.shape[1], dtype=torch.bool)
    untouched[KN_COLUMNS] = False
    assert torch.equal(weight[:, untouched], original[:, untouched])


def test_dense_apply_row_slices_of_a_bias_and_weight(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    rows = torch.tensor([0, 5])
    bias, weight = f"{FC_OUT_1}.bias", f"{FC_OUT_2}.weight"
    delta = DenseDelta(
        {bias: torch.tensor([1.5, -2.0]), weight: torch.ones(2, 256)},
        {bias: (0, rows), weight: (0, rows)},
    )
    before = snapshot(model)
    delta.apply(model)
    assert changed_tensors(model, before) == {bias, weight}
    assert torch.equal(model.get_parameter(bias)[rows], before[bias][rows] + torch.tensor([1.5, -2.0]))
    assert torch.equal(model.get_parameter(bias)[1:5], before[bias][1:5])
    assert torch.equal(model.get_parameter(weight)[1:5], before[weight][1:5])
    delta.revert(model)
    assert changed_tensors(model, before) == set()


def test_dense_unknown_parameter_raises_and_changes_nothing(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    before = snapshot(model)
    delta = DenseDelta({f"{FC_OUT_1}.weight": torch.ones(64, 256), "transformer.h.9.mlp.fc_out.weight": torch.ones(1)})
    with pytest.raises(KeyError):
        delta.apply(model)
    assert not delta.applied
    assert changed_tensors(model, before) == set()


def test_memory_delta_touches_no_weights(tiny_gptj_lm: LoadedModel) -> None:
    reading_memory(tiny_gptj_lm)
    model = tiny_gptj_lm.model
    before = snapshot(model)
    first, second = memory(tag="a"), memory(tag="b")
    first.apply(model)
    second.apply(model)
    assert getattr(model, MEMORY_ATTRIBUTE) == [first, second]
    assert changed_tensors(model, before) == set()
    with pytest.raises(RuntimeError):
        first.revert(model)  # not the most recent one
    second.revert(model)
    first.revert(model)
    assert getattr(model, MEMORY_ATTRIBUTE) == []
    with pytest.raises(RuntimeError):
        first.revert(model)


def test_composed_delta_applies_parts_in_order(tiny_gptj_lm: LoadedModel) -> None:
    reading_memory(tiny_gptj_lm)
    model = tiny_gptj_lm.model
    before = snapshot(model)
    parts = [low_rank(), dense_columns(), memory()]
    composed = ComposedDelta(parts)
    composed.apply(model)
    assert all(p.applied for p in parts) and composed.applied
    assert changed_tensors(model, before) == {f"{FC_OUT_1}.weight"}
    u, v = parts[0].factors[FC_OUT_1]
    expected = before[f"{FC_OUT_1}.weight"] + u @ v.T
    expected[:, KN_COLUMNS] += parts[1].changes[f"{FC_OUT_1}.weight"]
    assert torch.equal(model.get_parameter(f"{FC_OUT_1}.weight"), expected)
    composed.revert(model)
    assert not any(p.applied for p in parts)
    assert changed_tensors(model, before) == set()
    assert getattr(model, MEMORY_ATTRIBUTE) == []


@pytest.mark.parametrize("make", [low_rank, dense_whole, dense_columns, memory, lambda: ComposedDelta([low_rank(), memory()])])
def test_double_apply_raises_and_revert_needs_apply(tiny_gptj_lm: LoadedModel, make) -> None:
    reading_memory(tiny_gptj_lm)
    model = tiny_gptj_lm.model
    delta = make()
    with pytest.raises(RuntimeError):
        delta.revert(model)
    delta.apply(model)
    after_first = snapshot(model)
    with pytest.raises(RuntimeError):
        delta.apply(model)
    assert changed_tensors(model, after_first) == set()  # the refused second apply changed nothing
    delta.revert(model)
    with pytest.raises(RuntimeError):
        delta.revert(model)


# --------------------------------------------------------------------------------------------- revert


@pytest.mark.parametrize("make_first", [low_rank, dense_columns, memory, lambda: ComposedDelta([low_rank(), dense_columns()])])
def test_out_of_order_revert_is_an_error_and_changes_nothing(tiny_gptj_lm: LoadedModel, make_first) -> None:
    """Reverting an earlier delta under a later one would restore values the later one overwrote."""
    reading_memory(tiny_gptj_lm)
    model = tiny_gptj_lm.model
    before = snapshot(model)
    first, second = make_first(), dense_columns()
    first.apply(model)
    second.apply(model)
    both = snapshot(model)
    with pytest.raises(RuntimeError, match="out of order"):
        first.revert(model)
    assert first.applied and changed_tensors(model, both) == set()
    second.revert(model)
    first.revert(model)
    assert changed_tensors(model, before) == set()


def _naive_undo(delta, model) -> dict[str, torch.Tensor]:
    """What subtracting the change again would give, per touched weight."""
    if isinstance(delta, LowRankDelta):
        return {f"{m}.weight": linear_weight(model, m) - u @ v.T for m, (u, v) in delta.factors.items()}
    undone = {}
    for name, change in delta.changes.items():
        value = model.get_parameter(name).detach().clone()
        if name in delta.indices:
            dim, index = delta.indices[name]
            value.index_add_(dim, index, -change)
        else:
            value -= change
        undone[name] = value
    return undone


@pytest.mark.parametrize("make", [low_rank, dense_whole, dense_columns])
def test_revert_is_bit_exact_where_subtraction_is_not(tiny_gptj_lm: LoadedModel, make) -> None:
    """Large changes: (w + d) - d != w in float32, yet revert restores w bit for bit."""
    model = tiny_gptj_lm.model
    before = snapshot(model)
    delta = make(scale=1e4)
    delta.apply(model)
    undone = _naive_undo(delta, model)
    # Subtracting would not restore the (non-zero) weight; a zero-initialised bias survives it, hence `any`.
    assert any(not torch.equal(value, before[name]) for name, value in undone.items())
    delta.revert(model)
    assert changed_tensors(model, before) == set()


def test_sequence_of_deltas_reverted_in_reverse_order(tiny_gptj_lm: LoadedModel) -> None:
    reading_memory(tiny_gptj_lm)
    """Overlapping deltas (the same weight touched three times) applied in turn, reverted last-first."""
    model = tiny_gptj_lm.model
    original = snapshot(model)
    deltas = [
        low_rank(seed=1, scale=1e3),
        dense_whole(seed=2, scale=1e-3),
        dense_columns(seed=3, scale=1e5),
        memory(),
        ComposedDelta([low_rank(seed=4, module=FC_OUT_2), dense_whole(seed=5, scale=3.0)]),
    ]
    states = [original]
    for delta in deltas:
        delta.apply(model)
        states.append(snapshot(model))
    assert changed_tensors(model, original) == {f"{FC_OUT_1}.weight", f"{FC_OUT_2}.weight", f"{FC_OUT_2}.bias"}
    for position in reversed(range(len(deltas))):
        deltas[position].revert(model)
        assert changed_tensors(model, states[position]) == set()
    assert getattr(model, MEMORY_ATTRIBUTE) == []


def test_reapply_after_revert_gives_the_same_weights(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    delta = low_rank()
    delta.apply(model)
    applied = snapshot(model)
    delta.revert(model)
    delta.apply(model)
    assert changed_tensors(model, applied) == set()


def test_low_rank_factor_shapes_are_checked() -> None:
    with pytest.raises(ValueError):
        LowRankDelta({FC_OUT_1: (torch.zeros(64, 1), torch.zeros(256, 2))})
    with pytest.raises(ValueError):
        LowRankDelta({FC_OUT_1: (torch.zeros(64), torch.zeros(256))})


def test_nbytes_counts_stored_tensors() -> None:
    assert low_rank(rank=2).nbytes() == (64 * 2 + 256 * 2) * 4
    assert dense_columns().nbytes() == 64 * 3 * 4 + 3 * 8


# -------------------------------------------------------------------------------------------- GPT-2


def test_low_rank_on_gpt2_conv1d(tiny_gpt2_lm: LoadedModel) -> None:
    """Conv1D stores (in, out); the delta is given (out, in) and changes the output by exactly U Vᵀ x."""
    model = tiny_gpt2_lm.model
    name = "transformer.h.0.mlp.c_proj"
    conv = get_module(model, name)
    assert tuple(conv.weight.shape) == (128, 32)
    view = linear_weight(model, name)
    assert tuple(view.shape) == (32, 128) and view.data_ptr() == conv.weight.data_ptr()
    g = _gen(7)
    u, v = torch.randn(32, 2, generator=g), torch.randn(128, 2, generator=g)
    x = torch.randn(5, 128, generator=g, dtype=torch.float32)
    before_state = snapshot(model)
    with torch.no_grad():
        before = conv(x)
    delta = LowRankDelta({name: (u, v)})
    delta.apply(model)
    with torch.no_grad():
        after = conv(x)
    assert changed_tensors(model, before_state) == {f"{name}.weight"}
    assert torch.equal(conv.weight, before_state[f"{name}.weight"] + (u @ v.T).T)
    torch.testing.assert_close(after - before, x @ (u @ v.T).T, rtol=1e-5, atol=1e-5)
    delta.revert(model)
    assert changed_tensors(model, before_state) == set()


# ----------------------------------------------------------------------------------------------- key

BASE_KEY = dict(
    model_identity="tiny-gptj|built-in-code|float32",
    method="ROME",
    hparams={"layer": 1, "v_lr": 0.5, "mom2_adjustment": False},
    requests=[{"prompt": "{} is in", "subject": "The Eiffel Tower", "target_new": "Rome"}],
    upstream={"templates": "ab" * 32},
)


def test_delta_key_is_stable_and_canonical() -> None:
    key = delta_key(**BASE_KEY)
    assert len(key) == 64 and int(key, 16) >= 0
    assert delta_key(**BASE_KEY) == key
    reordered = dict(
        upstream=dict(BASE_KEY["upstream"]),
        requests=[dict(reversed(list(BASE_KEY["requests"][0].items())))],
        hparams=dict(reversed(list(BASE_KEY["hparams"].items()))),
        method="ROME",
        model_identity=BASE_KEY["model_identity"],
    )
    assert delta_key(**reordered) == key
    assert delta_key(**{**BASE_KEY, "upstream": None}) == delta_key(**{**BASE_KEY, "upstream": {}})


@pytest.mark.parametrize(
    "change",
    [
        {"model_identity": "tiny-llama|built-in-code|float32"},
        {"model_identity": "tiny-gptj|built-in-code|float16"},
        {"method": "FT"},
        {"hparams": {"layer": 2, "v_lr": 0.5, "mom2_adjustment": False}},
        {"hparams": {"layer": 1, "v_lr": 0.25, "mom2_adjustment": False}},
        {"hparams": {"layer": 1, "v_lr": 0.5, "mom2_adjustment": True}},
        {"hparams": {"layer": 1, "v_lr": 0.5, "mom2_adjustment": False, "extra": None}},
        {"requests": [{"prompt": "{} is in", "subject": "The Eiffel Tower", "target_new": "Berlin"}]},
        {"requests": [{"prompt": "{} is in", "subject": "The Colosseum", "target_new": "Rome"}]},
        {"requests": BASE_KEY["requests"] * 2},
        {"requests": []},
        {"upstream": {"templates": "cd" * 32}},
        {"upstream": {"templates": "ab" * 32, "stats": "ef" * 32}},
        {"upstream": None},
    ],
)
def test_delta_key_changes_with_every_input(change: dict) -> None:
    assert delta_key(**{**BASE_KEY, **change}) != delta_key(**BASE_KEY)


def test_delta_key_request_order_matters() -> None:
    """Sequential edits in a different order are a different delta."""
    a = {"prompt": "{} is in", "subject": "A", "target_new": "X"}
    b = {"prompt": "{} is in", "subject": "B", "target_new": "Y"}
    assert delta_key(**{**BASE_KEY, "requests": [a, b]}) != delta_key(**{**BASE_KEY, "requests": [b, a]})


# --------------------------------------------------------------------------------------------- store


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


STORED = {
    "low_rank": low_rank,
    "dense_whole": dense_whole,
    "dense_columns": dense_columns,
    "memory": memory,
    "memory_no_tensors": lambda: MemoryDelta("SERAC", [{"prompt": "q", "target": "t"}, {"prompt": "r", "target": "u"}]),
    "composed": lambda: ComposedDelta([low_rank(seed=4), dense_columns(seed=5), memory(tag="z"), dense_whole(seed=6)]),
    "nested": lambda: ComposedDelta([ComposedDelta([low_rank(seed=8), memory()]), dense_whole(seed=9)]),
}


@pytest.mark.parametrize("kind", sorted(STORED))
def test_store_round_trip_applies_identically(tmp_path: Path, kind: str) -> None:
    store = DeltaStore(tmp_path / "deltas")
    original = STORED[kind]()
    key = delta_key("m", kind, {}, [])
    assert not store.has(key)
    path = store.put(key, original)
    assert path == store.path(key) and path.is_file() and store.has(key)
    assert store.keys() == {key}
    loaded = store.get(key)
    assert type(loaded) is type(original) and not loaded.applied
    assert loaded.nbytes() == original.nbytes()

    lm_a, lm_b = reading_memory(build_tiny("tiny-gptj")), reading_memory(build_tiny("tiny-gptj"))
    original_weights = snapshot(lm_a.model)
    original.apply(lm_a.model)
    loaded.apply(lm_b.model)
    assert changed_tensors(lm_b.model, snapshot(lm_a.model)) == set()
    if isinstance(original, (MemoryDelta, ComposedDelta)):
        mem_a = getattr(lm_a.model, MEMORY_ATTRIBUTE, [])
        mem_b = getattr(lm_b.model, MEMORY_ATTRIBUTE, [])
        assert [(m.method, m.entries) for m in mem_a] == [(m.method, m.entries) for m in mem_b]
        for m_a, m_b in zip(mem_a, mem_b):
            assert m_a.tensors.keys() == m_b.tensors.keys()
            assert all(torch.equal(m_a.tensors[k], m_b.tensors[k]) for k in m_a.tensors)
    loaded.revert(lm_b.model)
    assert changed_tensors(lm_b.model, original_weights) == set()


def test_store_get_missing_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DeltaStore(tmp_path).get("0" * 64)


def test_store_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    keys = [delta_key("m", "ROME", {"i": i}, []) for i in range(3)]
    for i, key in enumerate(keys):
        store.put(key, low_rank(seed=i))
    store.put(keys[0], low_rank(seed=10))  # overwrite in place
    assert _all_files(tmp_path) == sorted(store.path(k) for k in keys)
    assert store.keys() == set(keys)
    u, _ = store.get(keys[0]).factors[FC_OUT_1]
    assert torch.equal(u, low_rank(seed=10).factors[FC_OUT_1][0])


def test_store_failed_write_keeps_previous_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeltaStore(tmp_path)
    key = delta_key("m", "ROME", {}, [])
    store.put(key, low_rank(seed=1))
    good = store.path(key).read_bytes()

    def broken_save(tensors, filename, metadata=None):  # writes half a file, then fails
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tensorfile, "save_file", broken_save)
    with pytest.raises(OSError):
        store.put(key, low_rank(seed=2))
    other = delta_key("m", "FT", {}, [])
    with pytest.raises(OSError):
        store.put(other, low_rank(seed=2))
    assert store.path(key).read_bytes() == good
    assert not store.has(other)
    assert _all_files(tmp_path) == [store.path(key)]


def test_store_prune_removes_unreferenced_keys(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    keys = [delta_key("m", "ROME", {"i": i}, []) for i in range(4)]
    for i, key in enumerate(keys):
        store.put(key, low_rank(seed=i))
    assert store.prune({keys[0], keys[2], "f" * 64}) == 2
    assert store.keys() == {keys[0], keys[2]}
    assert not store.has(keys[1]) and not store.has(keys[3])
    assert isinstance(store.get(keys[2]), LowRankDelta)
    assert store.prune({keys[0], keys[2]}) == 0
    assert store.prune(set()) == 2
    assert store.keys() == set() and _all_files(tmp_path) == []


def test_store_ignores_temporary_left_by_a_killed_writer(tmp_path: Path) -> None:
    store = DeltaStore(tmp_path)
    key = delta_key("m", "ROME", {}, [])
    store.put(key, low_rank())
    # What atomic_path leaves behind when the process is killed (SIGKILL) between mkstemp and os.replace.
    stray = store.path(key).parent / f".{key}.safetensors.k1ll3d.tmp.safetensors"
    stray.write_bytes(b"partial")
    assert store.keys() == {key}
    assert store.prune(set()) == 1


def test_a_memory_delta_applied_with_no_router_is_an_error_naming_method_and_stage(tiny_gptj_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_STAGE", "general@IKE-sequential")
    for delta in (memory("SERAC"), ComposedDelta([low_rank(), memory("SERAC")])):
        with pytest.raises(NoRouterError, match=r"SERAC.*general@IKE-sequential"):
            delta.apply(tiny_gptj_lm.model)
        assert not hasattr(tiny_gptj_lm.model, MEMORY_ATTRIBUTE) or getattr(tiny_gptj_lm.model, MEMORY_ATTRIBUTE) == []
        assert not delta.applied


def test_composed_apply_failure_leaves_model_unchanged(tiny_gptj_lm: LoadedModel) -> None:
    model = tiny_gptj_lm.model
    before = snapshot(model)
    composed = ComposedDelta([low_rank(), DenseDelta({"transformer.h.9.mlp.fc_out.weight": torch.ones(1)})])
    with pytest.raises(KeyError):
        composed.apply(model)
    assert changed_tensors(model, before) == set()
