"""A pre-imported interpreter that starts each stage process of tools/run_lanes.py by forking.

A stage's own work in a sweep is ~15-40 s; a fresh interpreter spends ~3 s of it importing torch,
torchvision (which pulls in torch._dynamo) and MLflow before the stage's code begins. This server
imports those libraries once; the lanes' `python -m stages.<kind> ...` commands (DVC's cmd, run
by the `python` on the lanes' PATH: `shim()` below) send their argv, working directory,
environment and standard streams to it over a Unix socket, and it forks a process that runs the
stage module as `python -m` would, on those streams, in that directory, with that environment.
The stage's exit status comes back as the command's own; a signal to the command reaches the
stage; a command that dies takes its stage with it. Anything but `-m stages.<kind>`, or no server
answering, runs the real interpreter unchanged.

Only third-party libraries are imported here (never `pipeline` or `stages`): each stage imports the
repository's code from its own working directory, as a fresh interpreter would, and nothing here
has run a parallel region or touched a GPU, so the forked process starts as one that did the
same imports itself (random generators re-seeded as a fresh one would be). tests/test_stage_server.py
checks that a training run this way writes the same bytes as one run directly.

    python tools/stage_server.py SOCKET     # serve until killed (tools/run_lanes.py starts it)
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys

PRELOAD = ("torch", "torchvision", "torch_fidelity", "mlflow", "pandas", "scipy.stats", "yaml", "pydantic")
SOCKET_ENV = "GANLAB_STAGE_SERVER"
_MAX_REQUEST = 1 << 20  # argv + cwd + environment, as JSON


def serve(path: str) -> None:
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-request watchers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    listener.listen(16)
    print(f"ganlab: stage server ready on {path} ({os.getpid()})", file=sys.stderr, flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:  # the watcher: forks the stage, reports its pid and exit status
            listener.close()
            _watch(conn)
        conn.close()


def _watch(conn: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this process waits for its stage itself
    try:
        message, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
        request = json.loads(message)
        stage = os.fork()
        if stage == 0:
            conn.close()
            _run_stage(request, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": stage}).encode() + b"\n")
        pidfd = os.pidfd_open(stage)
        import select
        readable, _, _ = select.select([conn, pidfd], [], [])
        if pidfd not in readable:  # the command went away (killed): so does its stage
            os.kill(stage, signal.SIGKILL)
        _, status = os.waitpid(stage, 0)
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def _run_stage(request: dict, fds: list[int]) -> None:
    """In the forked process: become `python -m <module> <args>` run in `cwd` with `env` on `fds`."""
    import random
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    served_from = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.clear()
    os.environ.update(request["env"])
    wanted = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *wanted,  # as `python -m` builds it
                   *(p for p in sys.path[1:] if p and p not in served_from and p not in wanted)]
    sys.argv = [request["module"], *request["args"]]
    random.seed()  # a fresh interpreter's generators: Python's from the OS, torch's from its default seed
    import numpy
    import torch
    numpy.random.seed()
    torch.manual_seed(torch.initial_seed())
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shim(argv: list[str], real_python: str) -> None:
    """The lanes' `python`: `-m stages.<kind> ...` goes to the server, anything else to `real_python`."""
    path = os.environ.get(SOCKET_ENV)
    if path and len(argv) >= 3 and argv[1] == "-m" and argv[2].startswith("stages."):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
        except OSError:
            conn.close()
        else:
            request = {"module": argv[2], "args": argv[3:], "cwd": os.getcwd(), "env": dict(os.environ)}
            socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
            sys.exit(_await(conn))
    os.execv(real_python, [real_python, *argv[1:]])


def _await(conn: socket.socket) -> int:
    replies = conn.makefile("r")
    pid = json.loads(replies.readline())["pid"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(pid, signum))
    line = replies.readline()
    if not line:
        print("ganlab: the stage server went away during the stage", file=sys.stderr)
        return 1
    code = json.loads(line)["exit"]
    if code < 0:  # the stage died of a signal: so does this command, as a shell reports it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def write_shim(directory: str) -> str:
    """A `python` in `directory` that calls shim() (started with -S: no site-packages to scan)."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "python")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(target, "w") as out:
        out.write(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {here!r})\n"
                  f"from stage_server import shim\nshim(sys.argv, {sys.executable!r})\n")
    os.chmod(target, 0o755)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/stage_server.py SOCKET")
    serve(sys.argv[1])
