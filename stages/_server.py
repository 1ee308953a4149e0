"""The stage server: stage processes forked from an interpreter that has already imported torch.

A stage's command is `python -m stages.<kind> ...`; a fresh interpreter spends ~3 s importing
torch, torchvision (which pulls in torch._dynamo) and MLflow before the stage's code begins, as
long as a short run's evaluation. The first such command starts this server in the background
and carries on by itself; the next ones (`hand_off`, called when the `stages` package is
imported) send their arguments, working directory, environment and standard streams to it over a
Unix socket, and it forks a process that runs the stage module as `python -m` would, on those
streams, in that directory, with that environment. The command exits with the stage's status; a
signal to the command reaches the stage; a command that dies takes its stage with it.

The server imports third-party libraries only, never the repository's code: each stage imports
`pipeline` and `stages` from its own working directory, as a fresh interpreter would. Nothing in
the server has run a parallel region or touched a GPU, and a forked stage re-seeds the random
generators as a fresh interpreter seeds them, so it computes what a fresh one computes
(tests/test_stage_server.py compares the weights a training writes both ways). One server per
user, interpreter, installed packages and version of this file; it exits after IDLE_S without a
stage. GANLAB_STAGE_SERVER=off runs every stage in a fresh interpreter.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import time

ENV = "GANLAB_STAGE_SERVER"
STARTED_ENV = "GANLAB_STAGE_STARTED"  # in a forked stage: when its command began (Unix time)
PRELOAD = ("torch", "torchvision", "torch_fidelity", "mlflow", "pandas", "scipy.stats", "yaml", "pydantic", "tqdm")
IDLE_S = 120
_MAX_REQUEST = 1 << 20  # argv, directory and environment, as JSON


def socket_path() -> str:
    """This user's server for this interpreter, these installed packages and this file."""
    import sysconfig
    key = hashlib.sha1("\0".join([
        sys.executable, str(os.stat(sysconfig.get_paths()["purelib"]).st_mtime_ns),
        hashlib.sha1(open(__file__, "rb").read()).hexdigest()]).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"ganlab-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    owner = os.stat(folder)
    if owner.st_uid != os.getuid() or owner.st_mode & 0o022:  # someone else's: their server would get our environment
        raise OSError(f"{folder} is not this user's alone")
    return os.path.join(folder, f"stages-{key}.sock")


def enabled() -> bool:
    return os.environ.get(ENV, "").lower() not in ("off", "0", "no", "false")


def hand_off() -> None:
    """In a stage command, before its imports: run it in the server and exit with its status, or,
    with no server up, start one for the next stages and return (this one runs as it is)."""
    if not enabled():
        return
    started = time.time() - time.process_time()  # the command's start (its start-up is CPU-bound)
    try:
        path = socket_path()
    except OSError:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        start_server()
        return
    request = {"module": sys.orig_argv[2], "args": sys.orig_argv[3:], "cwd": os.getcwd(),
               "env": {**os.environ, STARTED_ENV: repr(started)}}
    socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
    code = _await(conn)
    if code is not None:
        os._exit(code)
    # the server closed without taking it (it was going idle): this command runs the stage itself


def start_server() -> None:
    """The server, in the background, detached from this command's session and streams."""
    import subprocess
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.Popen([sys.executable, "-m", "stages._server"], cwd=here, env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_server(timeout_s: float = 120.0) -> bool:
    """Start the server if none is up and wait until it answers (tools/run_lanes.py, before its lanes)."""
    try:
        path = socket_path()
    except OSError:
        return False
    deadline = time.monotonic() + timeout_s
    started = False
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
            return True
        except OSError:
            if not started:
                start_server()
                started = True
            time.sleep(0.2)
    return False


def _await(conn: socket.socket) -> int | None:
    """The stage's exit status; None when the server did not start it."""
    replies = conn.makefile("r")
    first = replies.readline()
    if not first:
        return None
    group = json.loads(first)["pid"]  # the stage leads its own process group, as a command would
    def forward(signum, _frame):
        try:
            os.killpg(group, signum)
        except ProcessLookupError:  # it has just ended
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    line = replies.readline()
    if not line:
        print("ganlab: the stage server went away during the stage", file=sys.stderr)
        return 1
    code = json.loads(line)["exit"]
    if code < 0:  # the stage died of a signal: so does this command, as a shell would report it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def serve() -> None:
    """Import PRELOAD, then fork each request's stage; exit after IDLE_S without a request."""
    import fcntl
    import importlib
    path = socket_path()
    guard = open(path + ".lock", "a+")
    try:
        fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one server per socket: a second one leaves
    except OSError:
        return
    guard.truncate(0)
    guard.write(f"{os.getpid()}\n")  # which process serves (`kill $(cat ...sock.lock)` stops it)
    guard.flush()
    for name in PRELOAD:
        importlib.import_module(name)
    for name in [m for m in sys.modules if m.split(".")[0] in ("stages", "pipeline")]:
        del sys.modules[name]  # a stage imports the repository's code from its own directory
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-stage watchers are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    listener.bind(path)
    os.chmod(path, 0o600)  # a stage runs as the server's user: nobody else may ask for one
    listener.listen(64)
    listener.settimeout(IDLE_S)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                return
            conn.settimeout(None)
            if os.fork() == 0:
                listener.close()
                guard.close()  # the lock is the server's alone: a stage outliving it must not hold it
                _watch(conn)
            conn.close()
    finally:
        os.unlink(path)


def _watch(conn: socket.socket) -> None:
    """A forked watcher: forks the stage, tells the command its pid, then its exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this process waits for its stage itself
    try:
        import struct
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != os.getuid():
            return
        message, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
        request = json.loads(message)
        stage = os.fork()
        if stage == 0:
            conn.close()
            os.setpgid(0, 0)
            _become_stage(request, fds)
        try:
            os.setpgid(stage, stage)  # here too, so that it holds before the command can signal it
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": stage}).encode() + b"\n")
        import select
        pidfd = os.pidfd_open(stage)
        readable, _, _ = select.select([conn, pidfd], [], [])
        if pidfd not in readable:  # the command went away (killed): so do its stage and the stage's children
            os.killpg(stage, signal.SIGKILL)
        _, status = os.waitpid(stage, 0)
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def _become_stage(request: dict, fds: list[int]) -> None:
    """In the forked stage: become `python -m <module> <args>` run in `cwd` with `env` on `fds`."""
    import random
    import runpy
    import traceback

    import numpy
    import torch

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as a fresh interpreter sets it for its stdout
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    served_with = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ.clear()
    os.environ.update(request["env"])
    wanted = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *wanted,  # as `python -m` builds it
                   *(p for p in sys.path[1:] if p and p not in served_with and p not in wanted)]
    sys.argv = [request["module"], *request["args"]]
    random.seed()  # a fresh interpreter's generators: Python's and numpy's from the OS, torch's default seed
    numpy.random.seed()
    torch.manual_seed(torch.initial_seed())
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # torch read the server's at import; this one wins
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    serve()
