"""The delta store: what each edit changed, content-addressed, with exact apply and bit-exact revert."""

from kepitfalls.deltas.codecs import Delta, DenseDelta, LowRankDelta, MemoryDelta
from kepitfalls.deltas.composed import ComposedDelta
from kepitfalls.deltas.store import CorruptDeltaError, DeltaStore, delta_key

__all__ = ["ComposedDelta", "CorruptDeltaError", "Delta", "DeltaStore", "DenseDelta", "LowRankDelta", "MemoryDelta", "delta_key"]
