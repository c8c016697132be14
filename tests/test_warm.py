"""The warm interpreter runs a stage script as `python script.py` would: argv, directory, streams, environment,
exit status and signals; cold where it must be (no server, or a library-relevant variable differs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kepitfalls.warm import _differences

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    warm = "torch" in sys.modules  # preloaded by the server, imported by nothing in this file
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "warm": warm, "name": __name__,
                      "var": os.environ.get("KW_TEST_VAR"), "path0": sys.path[0]}))
    print("to stderr", file=sys.stderr)
    mode = sys.argv[1]
    if mode == "raise":
        raise ValueError("boom")
    if mode == "sleep":
        print("ready", file=sys.stderr, flush=True)
        time.sleep(60)
    sys.exit(int(mode))
""")

DRIVER = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    script, out = sys.argv[1], sys.argv[2]
    def stage(*args, env=None):
        result = subprocess.run([sys.executable, "-m", "kepitfalls.warm", "run", script, *args], capture_output=True,
                                text=True, env={**os.environ, **(env or {})})
        return {"rc": result.returncode, "out": result.stdout, "err": result.stderr}
    results = {"exit3": stage("3", env={"KW_TEST_VAR": "x"}), "raise": stage("raise"),
               "cold": stage("0", env={"OMP_NUM_THREADS": "7"})}
    client = subprocess.Popen([sys.executable, "-m", "kepitfalls.warm", "run", script, "sleep"],
                              stderr=subprocess.PIPE, text=True)
    while "ready" not in client.stderr.readline():
        pass
    client.send_signal(signal.SIGTERM)
    results["term"] = {"rc": client.wait(timeout=30)}
    json.dump(results, open(out, "w"))
""")


def _python(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, **(env or {})}
    env.pop("KEPITFALLS_WARM", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_without_a_server_the_script_runs_cold(tmp_path: Path) -> None:
    (tmp_path / "stage.py").write_text(SCRIPT)
    result = _python(["-m", "kepitfalls.warm", "run", "stage.py", "4"], tmp_path)
    shown = json.loads(result.stdout.splitlines()[0])
    assert result.returncode == 4 and "to stderr" in result.stderr
    assert shown["argv"] == ["stage.py", "4"] and not shown["warm"] and shown["path0"] == str(tmp_path)


def test_a_served_script_behaves_as_a_direct_run(tmp_path: Path) -> None:
    (tmp_path / "stage.py").write_text(SCRIPT)
    (tmp_path / "driver.py").write_text(DRIVER)
    around = _python(["-m", "kepitfalls.warm", "around", sys.executable, "driver.py", "stage.py", "out.json"], tmp_path)
    assert around.returncode == 0, around.stderr
    results = json.loads((tmp_path / "out.json").read_text())

    exit3 = results["exit3"]
    shown = json.loads(exit3["out"].splitlines()[0])
    assert exit3["rc"] == 3 and shown["warm"] and shown["name"] == "__main__"
    assert shown["argv"] == ["stage.py", "3"] and shown["cwd"] == str(tmp_path) and shown["path0"] == str(tmp_path)
    assert shown["var"] == "x" and exit3["err"].strip() == "to stderr"  # its own streams and environment

    assert results["raise"]["rc"] == 1 and "ValueError: boom" in results["raise"]["err"]
    cold = results["cold"]
    assert cold["rc"] == 0 and not json.loads(cold["out"].splitlines()[0])["warm"]
    assert "differs from the warm server's in OMP_NUM_THREADS" in cold["err"]
    assert results["term"]["rc"] == -15  # SIGTERM to the stage command ends the script the same way


def test_only_variables_read_at_import_send_a_stage_cold() -> None:
    server = {"PATH": "/bin", "OMP_NUM_THREADS": "1", "PS1": "$ "}
    assert _differences({"PATH": "/bin", "OMP_NUM_THREADS": "1", "KEPITFALLS_WORKERS": "2"}, server) == []
    assert _differences({"PATH": "/bin", "OMP_NUM_THREADS": "2"}, server) == ["OMP_NUM_THREADS"]
    assert _differences({"PATH": "/bin", "OMP_NUM_THREADS": "1", "HF_HOME": "/x"}, server) == ["HF_HOME"]
