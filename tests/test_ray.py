"""Fanning out over Ray: a real two-node cluster on 127.0.0.1 gives the same bytes as one local process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import fixtures_models
import test_workers
from fixtures_models import tiny_gptj_lm  # noqa: F401
from kepitfalls import editing, layout, workers
from kepitfalls.models.loading import LoadedModel
from test_workers import SUITE, evaluation_bytes, suite_on_disk, tiny_worker, tree_digest  # noqa: F401

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node, one CPU each, on 127.0.0.1; stopped afterwards."""
    port = "6391"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    # A short directory of its own: Ray's unix sockets live below it and their paths may not exceed 107
    # bytes, which pytest-xdist's per-worker base directory (…/popen-gw0/…) did.
    temp = tempfile.mkdtemp(prefix="kr")
    try:
        subprocess.run([RAY, "start", "--head", "--port", port, "--include-dashboard", "false", "--temp-dir", temp, *common],
                       env=env, check=True, capture_output=True)
        _join(port, common, env)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def _join(port: str, common: list[str], env: dict[str, str]) -> None:
    """Start the second node, failing with what Ray said."""
    joined = subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", *common], env=env, capture_output=True, text=True)
    if joined.returncode != 0:
        raise RuntimeError(f"the second Ray node did not join:\n{joined.stdout}\n{joined.stderr}")


def test_ray_actors_store_and_score_exactly_what_one_process_does(
    cluster: str, tiny_gptj_lm: LoadedModel, suite_on_disk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    for module in (fixtures_models, test_workers):  # the test's own loader travels by value
        ray.cloudpickle.register_pickle_by_value(module)
    one, two = tmp_path / "one", tmp_path / "two"
    editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, one)
    ray_run = editing.edit_suite(tiny_gptj_lm, None, "FT", SUITE, two, workers=2, loader=tiny_worker, engine="ray")
    assert ray_run["computed"] == 4
    assert tree_digest(one) == tree_digest(two)

    editing.compute_pre(tiny_gptj_lm, SUITE, layout.pre_dir(SUITE))
    serial = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, one)
    on_ray = editing.evaluate_suite(tiny_gptj_lm, None, "FT", SUITE, two, workers=2, loader=tiny_worker, engine="ray")
    assert evaluation_bytes(tmp_path, "serial", serial) == evaluation_bytes(tmp_path, "ray", on_ray)


def test_the_engine_comes_from_the_environment_then_params(monkeypatch: pytest.MonkeyPatch) -> None:
    class Runtime:
        engine = "local"

    class Params:
        runtime = Runtime()

    monkeypatch.delenv("KEPITFALLS_ENGINE", raising=False)
    assert workers.engine_name(Params()) == "local"
    monkeypatch.setenv("KEPITFALLS_ENGINE", "ray")
    assert workers.engine_name(Params()) == "ray"
    monkeypatch.setenv("KEPITFALLS_ENGINE", "dask")
    with pytest.raises(ValueError, match="KEPITFALLS_ENGINE"):
        workers.engine_name(Params())
