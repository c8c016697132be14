"""DVC stage `code`: one digest per stage kind of the shared code it runs on, artifacts/code/<kind>.sha256
(`kepitfalls.code_groups`); the stages of that kind depend on the digest file instead of ~25 source files."""

from __future__ import annotations

from kepitfalls.atomic import write_text
from kepitfalls.code_groups import GROUPS, digest
from kepitfalls.params import PROJECT_ROOT

if __name__ == "__main__":
    for kind, names in GROUPS.items():
        write_text(PROJECT_ROOT / "artifacts" / "code" / f"{kind}.sha256", digest(PROJECT_ROOT, names) + "\n")
        print(f"{kind}: {len(names)} paths")
