"""A warm interpreter for the pipeline's model stages: torch and transformers imported once per `dvc repro`.

Importing torch and transformers' model classes takes ~7 s on the 2-core machine the default run is sized for,
and a default run starts ~150 stages that need them (~17 min of imports). `python -m kepitfalls.warm around
dvc repro` (what `make repro` runs) imports them once in a server process, then runs the command with
$KEPITFALLS_WARM naming the server's socket. A model stage's command, `python -m kepitfalls.warm run
stages/<stage>.py ARGS`, asks the server for a fork of itself that runs the script with the stage's own
argv, working directory, environment and standard streams (passed as file descriptors), and exits with the
script's status; a signal sent to the stage command is forwarded to the script's process.

Without a server, or when the stage's Python or environment differs from the server's (so that what was
imported might differ from what the stage would import), the stage command replaces itself with
`python stages/<stage>.py ARGS`, exactly as if it had been called that way. Only third-party modules are
preloaded: the project's own code is imported fresh by every stage, so the code a stage runs is the code
its DVC dependencies hash. Outputs are the same bytes either way (tests/test_warm.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = "KEPITFALLS_WARM"

#: What the server imports before forking: the third-party modules every model stage imports (measured: 7 s of
#: a stage's start-up); their import-time state is the same in a fresh process with the same environment.
PRELOAD = [
    "numpy", "yaml", "pydantic", "tqdm", "safetensors.torch", "torch", "transformers", "transformers.modeling_utils",
    "transformers.models.llama.modeling_llama", "transformers.models.gptj.modeling_gptj",
    "transformers.models.gpt2.modeling_gpt2", "transformers.models.bert.modeling_bert",
    "transformers.models.auto.tokenization_auto", "transformers.convert_slow_tokenizer", "requests", "scipy.stats",
]

#: Environment variables the preloaded libraries read when imported (threads, caches, devices, paths): a stage
#: whose values differ runs cold. Any other variable (the project's own, the shell's, DVC's) may differ: the
#: forked script sees the stage's environment, and the project's code is imported after the fork.
_READ_AT_IMPORT = (
    "PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS_", "TOKENIZERS_", "TORCH", "PYTORCH_", "OMP_", "MKL_",
    "OPENBLAS_", "KMP_", "GOTO", "CUDA_", "NVIDIA_", "LD_", "XDG_CACHE_HOME", "TMPDIR",
)

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _differences(env: dict[str, str], reference: dict[str, str]) -> list[str]:
    """Variables read at import time that are set differently in `env` than in `reference`."""
    keys = set(env) | set(reference)
    return sorted(k for k in keys if k.startswith(_READ_AT_IMPORT) and env.get(k) != reference.get(k))


# ---------------------------------------------------------------------------------------------------- client
def run(script: str, args: list[str]) -> int:
    """Run `script` with `args` in a fork of the warm server, or replace this process with a cold run."""
    address = os.environ.get(ENV)
    conn = _connect(address) if address else None
    if conn is None:
        _run_cold(script, args)
    request = {"argv": [script, *args], "cwd": os.getcwd(), "env": dict(os.environ), "executable": sys.executable}
    with conn:
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        for sig in _FORWARDED:
            signal.signal(sig, lambda number, _frame: conn.sendall(b"%d\n" % number))
        reply = _read_line(conn)
    if reply is None:
        print(f"kepitfalls.warm: the warm server at {address} went away while running {script}", file=sys.stderr)
        return 1
    answer = json.loads(reply)
    if "cold" in answer:
        print(f"kepitfalls.warm: {answer['cold']}; running {script} cold", file=sys.stderr)
        _run_cold(script, args)
    status = int(answer["status"])
    if status < 0:  # killed by a signal: die the same way, so that the caller sees what a direct run would show
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def _connect(address: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        return None
    return conn


def _run_cold(script: str, args: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, script, *args])


def _read_line(conn: socket.socket) -> bytes | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


# ---------------------------------------------------------------------------------------------------- server
def around(command: list[str]) -> int:
    """Run `command` (e.g. `dvc repro`) with a warm server for its stages; stop the server when it ends."""
    directory = tempfile.mkdtemp(prefix="kw")  # short: a UNIX socket's path is limited to 107 bytes
    address = os.path.join(directory, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)  # stages that start while the imports run wait in the backlog
    env = {**os.environ, ENV: address}
    child = subprocess.Popen(command, env=env)  # the command starts at once; the imports overlap it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command; it decides
    try:
        for name in PRELOAD:
            __import__(name)
        _serve(listener, env, child)
    finally:
        listener.close()
        Path(address).unlink(missing_ok=True)
        os.rmdir(directory)
    status = child.wait()
    return 128 - status if status < 0 else status  # a signal's number as a shell reports it


def _serve(listener: socket.socket, env: dict[str, str], command: subprocess.Popen) -> None:
    """Answer stage requests until the command exits; each request is served by a forked session."""
    sessions: set[int] = set()
    while command.poll() is None:
        ready, _, _ = select.select([listener], [], [], 0.5)
        if ready:
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                os._exit(_session(conn, env))
            conn.close()
            sessions.add(pid)
        for pid in list(sessions):
            if os.waitpid(pid, os.WNOHANG)[0]:
                sessions.discard(pid)
    for pid in sessions:
        os.waitpid(pid, 0)


def _session(conn: socket.socket, env: dict[str, str]) -> int:
    """One stage: check it may be served warm, fork the script's process, relay signals, report its status."""
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while message and not message.endswith(b"\n"):
        message += conn.recv(1 << 20) or b"\0"  # a cut-off request fails to parse below
    request = json.loads(message)
    differing = _differences(request["env"], env)
    if request["executable"] != sys.executable or differing:
        reason = f"its Python is {request['executable']}" if request["executable"] != sys.executable else (
            f"its environment differs from the warm server's in {', '.join(differing)}")
        conn.sendall(json.dumps({"cold": reason}).encode() + b"\n")
        return 0
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_stage(request, fds)
    for fd in fds:
        os.close(fd)
    exited = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn, exited], [], [])
        if exited in ready:
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            conn.sendall(json.dumps({"status": status}).encode() + b"\n")
            return 0
        line = _read_line(conn)
        os.kill(pid, int(line) if line else signal.SIGTERM)  # the stage command was signalled, or is gone


def _become_stage(request: dict, fds: list[int]) -> None:
    """In the forked process: take the stage's streams, directory, environment and argv; run; exit."""
    os.setpgid(0, 0)  # signals reach the script only through its stage command, once
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams, open until it exits
    sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script.py` sets it
    if "multiprocessing.process" in sys.modules:  # spawned workers find the script from the directory it ran in
        sys.modules["multiprocessing.process"].ORIGINAL_DIR = os.getcwd()
    status = _run_script(script)
    os._exit(status)


def _run_script(script: str) -> int:
    """The script as `__main__`, with the interpreter's exit semantics (status, traceback, exit handlers)."""
    import atexit
    import runpy
    import traceback

    status = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the status says it failed
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def main(argv: list[str]) -> int:
    usage = "usage: python -m kepitfalls.warm around COMMAND... | run SCRIPT [ARGS...]"
    if len(argv) >= 2 and argv[0] == "around":
        return around(argv[1:])
    if len(argv) >= 2 and argv[0] == "run":
        return run(argv[1], argv[2:])
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
