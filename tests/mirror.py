"""Where the tests find the read-only benchmark mirror, for fixtures and module-level skips alike."""

from __future__ import annotations

import os
from pathlib import Path

#: $KEPITFALLS_MIRROR, else ../shared/benchmarks beside the repository (as in CI).
MIRROR = Path(os.environ.get("KEPITFALLS_MIRROR") or Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks")
