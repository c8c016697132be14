"""Atomic writes leave files and directories with the permissions of any other tool's output (umask-based)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from kepitfalls.atomic import atomic_dir, write_json


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_has_umask_permissions(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"a": 1})
    assert _mode(target) == 0o666 & ~umask
    assert _mode(target.parent) == 0o777 & ~umask  # made by mkdir, for comparison


def test_atomic_dir_has_umask_permissions(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        write_json(staging / "manifest.json", {})
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "manifest.json") == 0o666 & ~umask
