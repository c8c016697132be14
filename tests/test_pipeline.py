"""Integration: the real DVC pipeline on the real SmolLM2 model and the real mirrored benchmarks.

One session-wide workspace (a copy of this repository with smaller subset and corpus sizes in
params.yaml) runs `dvc repro` once; the tests then check what it produced and how DVC reacts to
changes, and push to and pull from real DVC remotes (a local directory, and a WebDAV server on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The workspace runs the CounterFact suite with two methods on two cases: every stage kind, kept small.
METHODS = ["ROME", "FT"]
SMALL = {
    ("report", "methods"): METHODS,
    ("report", "suites"): ["counterfact"],
    ("templates", "ROME", "recipe"): [[5, 2], [10, 2]],
    ("stats", "corpus", "tokens"): 3072,  # twice SmolLM2's 1,536-wide keys: C must be invertible (prepare/stats.py)
    ("stats", "corpus", "length"): 48,
    ("stats", "corpus", "batch_size"): 16,
    # what the CounterFact suite, the statistics, the prepare stages and Figure 4 read (every benchmark's fetch
    # from the mirror is a unit test in test_download.py; each further download stage here would cost a
    # process start)
    ("data", "benchmarks"): {
        name: {"include_optional": False}
        for name in ("easyedit_portability", "wikitext2", "zsre", "natural_questions", "sst2", "gsm8k", "samsum", "me_ppl")
    },
    # Figure 4 end to end at its smallest: FT's one-edit chain, one example per task
    ("general", "methods"): ["FT"],
    ("general", "edits"): 1,
    ("general", "checkpoints"): [0, 1],
    ("general", "tasks"): {
        "nq": {"subset_size": 1, "max_new_tokens": 4, "passages": None},
        "sst2": {"subset_size": 1, "max_new_tokens": 1},
        "gsm8k": {"subset_size": 1, "max_new_tokens": 2},
        "samsum": {"subset_size": 1, "max_new_tokens": 4},
    },
    ("general", "me_ppl", "subset_size"): 2,
    ("general", "wikitext"): {"sequences": 1, "length": 16, "seed": 0},
    # one process per stage: `make test` already runs a test file per core
    ("runtime", "workers"): 1,
}


def run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """A command in a project copy, importing that copy's own code (not the installed checkout's)."""
    env = {
        **os.environ,
        "KEPITFALLS_THREADS": "1",
        "PYTHONPATH": str(cwd / "src"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def copy_project(source: Path, dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the project, as a fresh git repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(args, cwd=dest, check=True, capture_output=True)


def set_params(path: Path, changes: dict[tuple[str, ...], object]) -> None:
    params = yaml.safe_load(path.read_text())
    for keys, value in changes.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def commit_all(cwd: Path) -> None:
    for args in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"]):
        subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def repro_stages(cwd: Path) -> set[str]:
    """Run `dvc repro`; the stages it ran."""
    return ran_stages(run(["dvc", "repro"], cwd).stdout)


#: What a test that changes params or code may change in the workspace (besides DVC's cache).
MUTABLE = (
    "params.yaml", "dvc.lock", "src", "artifacts/params", "artifacts/code", "data/suites", "data/pre", "artifacts/deltas",
    "metrics", "reports",
)


@contextmanager
def restored(workspace: Path, scratch: Path) -> Iterator[None]:
    """Run a block that changes the workspace, then put back every file it may have changed, byte for byte,
    and check that DVC finds the pipeline up to date again: a copy, not a second `dvc repro` (which re-runs
    every stage whose outputs are persisted or uncached, minutes per test)."""
    saved = scratch / "saved"
    for name in MUTABLE:
        source = workspace / name
        (saved / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, saved / name)
    try:
        yield
    finally:
        for name in MUTABLE:
            target = workspace / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
            (shutil.copytree if (saved / name).is_dir() else shutil.copy2)(saved / name, target)
        assert repro_stages(workspace) == set()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    copy_project(REPO_ROOT, root)
    counterfact = yaml.safe_load((root / "params.yaml").read_text())["suites"]["counterfact"]
    only_counterfact = {"counterfact": {**counterfact, "subset_size": 2}}
    set_params(root / "params.yaml", {**SMALL, ("suites",): only_counterfact, ("data", "mirror"): str(data_mirror)})
    commit_all(root)
    run([sys.executable, "-m", "kepitfalls.warm", "around", "dvc", "repro"], root, timeout=1500)  # as `make repro`
    commit_all(root)
    return root


def test_model_stage_converts_smollm2_with_the_right_tokenizer(workspace: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workspace / "models" / "smollm2-135m")
    # Token ids from ../shared/reference/MODELS.md: some transformers versions convert this tokenizer wrongly.
    assert tokenizer(" Paris", add_special_tokens=False)["input_ids"] == [7042]
    assert tokenizer("The capital of France is")["input_ids"] == [504, 3575, 282, 4649, 314]
    manifest = json.loads((workspace / "models" / "smollm2-135m" / "kepitfalls-model.json").read_text())
    assert "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" in manifest["identity"]


def test_every_configured_benchmark_is_downloaded_from_the_mirror(workspace: Path, data_mirror: Path) -> None:
    configured = yaml.safe_load((workspace / "params.yaml").read_text())["data"]["benchmarks"]
    assert set(configured) == set(SMALL[("data", "benchmarks")])
    for name in configured:
        manifest = json.loads((workspace / "data" / "raw" / name / "MANIFEST.json").read_text())
        assert manifest["files"], name
        for entry in manifest["files"]:
            assert (workspace / "data" / "raw" / name / entry["file"]).is_file()


def test_repro_writes_the_counterfact_table_with_every_method(workspace: Path) -> None:
    table = (workspace / "reports" / "counterfact.md").read_text()
    for method in METHODS:
        metrics = json.loads((workspace / "metrics" / method / "counterfact.json").read_text())
        assert {"ES", "PS", "NS", "EM", "PM", "NM", "Score", "NS_plus", "NKL", "NKL_ref"} <= set(metrics)
        assert metrics["cases"] == 2
        assert f"| {method} |" in table
    assert (workspace / "reports" / "counterfact.tex").is_file()
    assert (workspace / "reports" / "counterfact.csv").is_file()


def test_rome_rewrites_known_facts_on_the_real_model(workspace: Path) -> None:
    metrics = json.loads((workspace / "metrics" / "ROME" / "counterfact.json").read_text())
    assert metrics["ES"] == 100.0


def test_second_repro_is_a_fast_no_op(workspace: Path) -> None:
    started = time.perf_counter()
    output = run(["dvc", "repro"], workspace).stdout
    assert "up to date" in output
    assert "Running stage" not in output
    assert time.perf_counter() - started < 30


def locked_outs(workspace: Path) -> dict[str, list[dict]]:
    """Every stage's outputs as dvc.lock records them (path, md5, size, files)."""
    stages = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]
    return {name: entry.get("outs", []) for name, entry in stages.items()}


def test_recomputed_artifacts_are_byte_identical(workspace: Path) -> None:
    """model, prepare, corpus, stats and an edit stage re-run in new processes (ROME's deltas deleted
    first, so they are really recomputed) write the same bytes: dvc.lock does not change, and a forced
    statistics run leaves every delta key valid (nothing downstream re-runs)."""
    before = locked_outs(workspace)
    shutil.rmtree(workspace / "artifacts" / "deltas" / "ROME" / "counterfact")
    forced = ["model", "prepare@ROME", "corpus", "stats", "cell@ROME-counterfact"]
    for stage in forced:
        output = run(["dvc", "repro", "-f", "-s", stage], workspace).stdout
        assert f"Running stage '{stage}'" in output
    assert "ROME on counterfact: 2 computed, 0 reused" in output
    after = locked_outs(workspace)
    for stage in forced:
        assert after[stage] == before[stage], stage
    assert repro_stages(workspace) == set()


def test_changing_rome_params_reruns_only_rome_cells(workspace: Path, tmp_path: Path) -> None:
    with restored(workspace, tmp_path):
        set_params(workspace / "params.yaml", {("methods", "ROME", "smollm2-135m", "v_lr"): 0.4})
        # The report re-runs only if the metrics changed; nothing of FT, selection or the model re-runs (`params`
        # re-runs on any change of params.yaml and rewrites only the changed keys' files).
        # prepare@ROME reads the same block (where a trained editor's settings live) and rewrites the same
        # templates, so the new deltas' keys differ only by the changed hyper-parameter.
        assert repro_stages(workspace) - {"report"} == {"params", "prepare@ROME", "cell@ROME-counterfact"}


def test_growing_a_subset_computes_only_the_new_edits(workspace: Path, tmp_path: Path) -> None:
    """A subset size is one parameter away: DVC re-selects (its run-cache never hands back the old subset,
    see params.RUN_CACHE_BLIND_KEYS) and the persisted deltas of the cases already edited are reused."""
    with restored(workspace, tmp_path):
        set_params(workspace / "params.yaml", {("suites", "counterfact", "subset_size"): 3})
        output = run(["dvc", "repro"], workspace).stdout
        ran = ran_stages(output)
        assert {"select@counterfact", "pre@counterfact"} | {f"cell@{m}-counterfact" for m in METHODS} <= ran
        records = json.loads((workspace / "data" / "suites" / "counterfact.json").read_text())["records"]
        assert len(records) == 3
        for method in METHODS:
            assert f"{method} on counterfact: 1 computed, 2 reused" in output
            assert json.loads((workspace / "metrics" / method / "counterfact.json").read_text())["cases"] == 3


def test_changing_metric_code_reruns_only_evaluation(workspace: Path, tmp_path: Path) -> None:
    module = workspace / "src" / "kepitfalls" / "metrics" / "counterfact.py"
    with restored(workspace, tmp_path):
        module.write_text(module.read_text() + "\n# a change\n")
        # Pre-edit scores hold raw outputs only (matching is metric code), so neither pre@, select@ nor the model
        # stage runs (`code` re-runs on any code change; no stage kind's shared-code digest moved); the cells
        # re-run and score again, but every delta's key is unchanged, so no edit is recomputed.
        output = run(["dvc", "repro"], workspace).stdout
        ran = ran_stages(output)
        assert ran - {"report"} == {"code"} | {f"cell@{m}-counterfact" for m in METHODS}
        for method in METHODS:
            assert f"{method} on counterfact: 0 computed, 2 reused" in output


def test_deltas_travel_through_a_real_dvc_remote(workspace: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], workspace)
    run(["dvc", "push", "cell@ROME-counterfact"], workspace)
    commit_all(workspace)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    assert not (clone / "artifacts" / "deltas" / "ROME" / "counterfact").exists()
    run(["dvc", "pull", "cell@ROME-counterfact"], clone)
    ours = workspace / "artifacts" / "deltas" / "ROME" / "counterfact"
    theirs = clone / "artifacts" / "deltas" / "ROME" / "counterfact"
    names = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert names and names == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes()


@pytest.fixture
def webdav_remote(tmp_path: Path) -> Iterator[str]:
    """A real WebDAV server (wsgidav, the `test` extra) on a free port of 127.0.0.1, serving an empty folder."""
    root = tmp_path / "webdav"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "wsgidav"), "--host", "127.0.0.1", "--port", str(port), "--root", str(root),
         "--auth", "anonymous", "--no-config", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"wsgidav did not start on 127.0.0.1:{port}") from None
                time.sleep(0.2)
        yield f"webdav://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_second_researcher_pulls_everything_and_recomputes_nothing(workspace: Path, tmp_path: Path, webdav_remote: str) -> None:
    """Push the finished workspace to a lab's WebDAV remote; a fresh clone pulls it (models, statistics, deltas,
    every other output) and `dvc repro` runs no stage, with the same metrics."""
    run(["dvc", "remote", "add", "-f", "lab", webdav_remote], workspace)
    run(["dvc", "push", "-r", "lab"], workspace)
    commit_all(workspace)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(workspace), str(clone)], check=True)
    started = time.perf_counter()
    run(["dvc", "remote", "add", "-f", "lab", webdav_remote], clone)
    run(["dvc", "pull", "-r", "lab"], clone)
    output = run(["dvc", "repro"], clone).stdout
    print(f"dvc pull + no-op dvc repro on the fresh clone: {time.perf_counter() - started:.1f} s")
    assert "Running stage" not in output, output
    for stage in ("stats", "cell@ROME-counterfact", "cell@FT-counterfact"):
        assert f"Stage '{stage}' didn't change, skipping" in output, output
    assert json.loads(run(["dvc", "metrics", "diff", "--json"], clone).stdout or "{}") == {}
