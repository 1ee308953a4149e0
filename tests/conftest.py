"""Shared fixtures: the real data embedded in the repository, and an offline guard.

Tests never download anything: GANLAB_OFFLINE=1 makes every data source and weight loader
fail with a clear error instead of reaching the network. They need nothing outside the
repository: the MNIST / Kuzushiji-MNIST / Fashion-MNIST test sets and the Oxygen icons ship in
data/embedded/ (see its README), and the data search path always includes that folder.
"""
import contextlib
import os
from pathlib import Path

import pytest
import yaml

from pipeline.core.env import EMBEDDED_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (-n N) the N test processes share the cores: each, and what it starts, gets its
# share of torch threads (set before torch loads; N processes x all cores would contend for them).
_TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _TEST_PROCESSES > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _TEST_PROCESSES)))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("GANLAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded() -> Path:
    """data/embedded/: official MNIST, KMNIST and Fashion-MNIST test files, the K-49 class map, icons."""
    return EMBEDDED_DIR


ICONS64 = EMBEDDED_DIR / "oxygen-icons" / "64x64"  # 587 icons in 9 category folders
ICONS_APPS128 = EMBEDDED_DIR / "oxygen-icons" / "128x128" / "apps"  # 164 icons, no sub-folders


@contextlib.contextmanager
def study_workspace(root: Path, params: dict):
    """For module-scoped fixtures: `root` laid out like the repo root (params.yaml, every dataset
    prepared, a private MLflow store), with the working directory and environment set while inside.
    Yields the validated params."""
    from pipeline.data import prepare as data
    from pipeline.core import layout
    from pipeline.core.config import load_params

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("GANLAB_OFFLINE", "1")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        loaded = load_params()
        for name, cfg in loaded.datasets.items():
            data.prepare_dataset(cfg, layout.prepared_dir(name))
        yield loaded


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int, extra_args: tuple[str, ...] = (), env: dict | None = None,
                        workers: int | None = 1, store_uri: str | None = None):
    """`mlflow server` on 127.0.0.1:port over `store_uri` (by default a store in `root`, kept across
    restarts), artifacts in `root`; returns (url, process) once it answers. `workers` None: MLflow's
    default. Stop it with stop_mlflow_server."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         *(["--workers", str(workers)] if workers else []),
         "--backend-store-uri", store_uri or f"sqlite:///{root / 'store.db'}",
         "--artifacts-destination", str(root / "artifacts"), *extra_args],
        stdout=open(root / "server.log", "a"), stderr=subprocess.STDOUT,
        # no job runner, as in docs/operations.md's recipe: ganlab uses none of MLflow's jobs
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
        start_new_session=True,  # its own process group: stop_mlflow_server takes its workers too
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return url, proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)


def stop_mlflow_server(proc, sig=None) -> None:
    """Stop the server and its worker processes (killing only the parent leaves them serving)."""
    import os
    import signal

    os.killpg(proc.pid, sig or signal.SIGTERM)
    proc.wait(timeout=30)
    try:  # its job-runner (huey) processes outlive a SIGTERM of the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_stage_servers(tmpdirs) -> None:
    """End the stage servers of commands run with these TMPDIRs (stages/_server.py writes each one's
    pid beside its socket) now, instead of after their idle minutes: each holds torch in memory."""
    import os
    import signal

    for lock in (p for tmpdir in tmpdirs for p in Path(tmpdir).glob("ganlab-*/*.sock.lock")):
        pid = lock.read_text().strip()
        if pid.isdigit():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture()
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback over a fresh store; its URL."""
    url, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), free_port())
    yield url
    stop_mlflow_server(proc)
