"""A shared tracking server as docs/operations.md runs it, and machines that use it: the basic-auth
MLflow server (SQLite or PostgreSQL behind it), its users, and clones of a study repository that
stand in for machines, each in a mount namespace where the others' folders are empty (where the
test runs as root), sharing only the server and a DVC remote. Used by tests/test_tracking_auth.py,
tests/test_tracking_load.py and benchmarks/tracking_load.py."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO_ROOT, free_port, start_mlflow_server, stop_mlflow_server
from tests.dvc_repo import git_env

ADMIN = "admin"
AUTH_CACHE_S = 60  # docs/operations.md's auth.ini


# --- the database behind the server -------------------------------------------------------------

def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here (None when it can)."""
    if not shutil.which("initdb") and not Path("/usr/lib/postgresql").is_dir():
        return "PostgreSQL is not installed (Debian: apt install postgresql)"
    if importlib.util.find_spec("psycopg") is None:  # SQLAlchemy's driver for postgresql:// URIs
        return "psycopg is not installed (pip install -r requirements.txt)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run the database as"
    return None


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1])


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own on 127.0.0.1 (password login), as a backend store."""
    root: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    def _run(self, args: list[str]) -> None:
        # PostgreSQL refuses to run as root: as root, its files and processes are the postgres user's
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, **as_user)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> "Postgres":
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.root / "data"), "-U", "mlflow", f"--pwfile={pwfile}",
                   "--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
        pwfile.unlink()
        self._run([_pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "start",
                   "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"])
        # the server reads the password from a libpq password file, not from its command line
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:mlflow:{self.password}\n")
        self.passfile.chmod(0o600)
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="mlflow", password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
            connection.execute("CREATE DATABASE mlflow_auth")
        return self

    @property
    def passfile(self) -> Path:
        return self.root / "pgpass"

    def uri(self, database: str) -> str:
        return f"postgresql://mlflow@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():  # running (start may have failed before)
            self._run([_pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-w", "stop", "-m", "fast"])


# --- the server and its users -------------------------------------------------------------------

@dataclass
class AuthServer:
    """MLflow's basic-auth server on loopback, artifacts stored and served by it, its admin's
    password set at first start (MLflow ships none), users made by tools/tracking_users.py."""
    url: str
    process: subprocess.Popen
    root: Path
    admin_password: str
    users: dict = field(default_factory=dict)  # name -> password

    def admin_env(self) -> dict:
        return {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self.admin_password}

    def add_user(self, name: str, role: str) -> str:
        password = secrets.token_urlsafe(18)
        made = subprocess.run([sys.executable, "tools/tracking_users.py", "--server", self.url, "add", name, "--role", role],
                              cwd=REPO_ROOT, env={**os.environ, **self.admin_env()}, input=password + "\n",
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise RuntimeError(made.stderr)
        self.users[name] = password
        return password

    def log_text(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")


def start_auth_server(root: Path, postgres: Postgres | None = None, workers: int | None = None,
                      auth_cache_s: int = AUTH_CACHE_S, jobs: bool = False) -> AuthServer:
    """The server of docs/operations.md: runs and users in SQLite files beside it, or in `postgres`.
    `workers`: uvicorn's worker processes (MLflow's default, 4, when None); `auth_cache_s`: how long a
    worker trusts a checked password (0: hash it on every request, MLflow's default); `jobs`: MLflow's
    job runner (its default; the recipe turns it off)."""
    root.mkdir(parents=True, exist_ok=True)
    auth_db = postgres.uri("mlflow_auth") if postgres else f"sqlite:///{root / 'auth.db'}"
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_db}\nadmin_username = {ADMIN}\nauth_cache_ttl_seconds = {auth_cache_s}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    admin_password = secrets.token_urlsafe(18)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(jobs).lower()}
    if postgres:
        env["PGPASSFILE"] = str(postgres.passfile)
    url, process = start_mlflow_server(root, free_port(), ("--app-name", "basic-auth"), env, workers=workers,
                                       store_uri=postgres.uri("mlflow") if postgres else None)
    return AuthServer(url, process, root, admin_password)


@contextmanager
def tracking_server(backend: str, **options):
    """(base, server): a scratch folder (short_base) and in it the recipe's server over `backend`
    ("sqlite", or "postgresql" with its cluster in base/pg); server None for "local" (each machine a
    store of its own). Whatever started is stopped, and the folder removed, on the way out, whatever
    failed. `options`: start_auth_server's."""
    base, postgres, server = short_base(), None, None
    try:
        if backend == "postgresql":
            postgres = Postgres(base / "pg")
            postgres.start()
        if backend != "local":
            server = start_auth_server(base / "server", postgres, **options)
        yield base, server
    finally:
        if server:
            stop_mlflow_server(server.process)
        if postgres:
            postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- machines -----------------------------------------------------------------------------------

@dataclass
class Machine:
    """A clone of the study in a folder of its own. Isolated (root only), it runs in a mount
    namespace of its own where everything else under `top` is hidden (an empty read-only tmpfs over
    it) but the folders in `shared`: what the others write cannot be read, nor the server's files."""
    name: str
    folder: Path
    top: Path | None = None  # None: not isolated
    shared: tuple[Path, ...] = ()

    @property
    def repo(self) -> Path:
        return self.folder / "study"

    @property
    def tmpdir(self) -> Path:
        return self.folder / "tmp"  # its stage server's socket too

    def env(self, **extra) -> dict:
        # one thread each: the machines share this one's cores (each of its own would use its own)
        return git_env(HOME=str(self.folder / "home"), TMPDIR=str(self.tmpdir), USER=self.name,
                       OMP_NUM_THREADS="1", **extra)

    def argv(self, command: str) -> list[str]:
        if self.top is None:
            return ["bash", "-c", command]
        mounts = "".join(f"mount -t tmpfs -o ro,size=4k none '{p}' && " for p in self.hidden_roots())
        return ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", mounts + command]

    def hidden_roots(self) -> list[Path]:
        """The topmost folders under `top` that neither hold nor lie in the machine's own or a shared one."""
        keep = {self.folder, *self.shared}
        roots, pending = [], [self.top]
        while pending:
            for child in sorted(c for c in pending.pop().iterdir() if c.is_dir()):
                if child in keep:
                    continue
                if any(k.is_relative_to(child) for k in keep):
                    pending.append(child)  # holds something kept: hide its other entries instead
                else:
                    roots.append(child)
        return roots

    def popen(self, command: str, env: dict, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            return subprocess.Popen(self.argv(command), cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT)

    def sees(self, folder: Path) -> bool:
        """Whether this machine can list anything in `folder`."""
        done = subprocess.run(self.argv(f"ls -A '{folder}'"), capture_output=True, text=True)
        return done.returncode == 0 and done.stdout.strip() != ""


def isolation_missing() -> str | None:
    """Why machines cannot be given mount namespaces of their own here (None when they can)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "not root (or no unshare): the machines' folders are all readable by this one user"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs",
                            "-o", "ro,size=4k", "none", tempfile.gettempdir()], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces refused here ({probe.stderr.strip()})"
    return None


def make_machines(top: Path, origin: Path, count: int, shared: tuple[Path, ...], isolated: bool) -> list[Machine]:
    """`count` clones of `origin` in folders top/machines/m<i>; isolated: each sees only its own
    folder and `shared` of what lies under `top`."""
    (top / "machines").mkdir()
    machines = []
    for i in range(count):
        machine = Machine(f"machine{i}", top / "machines" / f"m{i}", top if isolated else None, shared)
        machine.folder.mkdir()
        subprocess.run(["git", "clone", "-q", str(origin), str(machine.repo)], check=True, capture_output=True)
        (machine.folder / "home").mkdir()
        machine.tmpdir.mkdir()
        machines.append(machine)
    return machines


def short_base() -> Path:
    """A folder with a short path under /tmp (the stage server's socket path must stay < 108 bytes),
    that the postgres user may pass through (pytest's own tmp_path is its user's only)."""
    base = Path(tempfile.mkdtemp(prefix="gl-", dir="/tmp"))
    base.chmod(0o711)
    return base


def run_at_once(machines: list[Machine], commands: list[str], envs: list[dict], logs: Path) -> list[dict]:
    """Start each machine's command (bash) at the same moment; wait for all. Returns, per machine,
    its exit status, wall seconds and output."""
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    running = {m.name: m.popen(command, env, logs / f"{m.name}.log") for m, command, env in zip(machines, commands, envs)}
    ended = {}
    while len(ended) < len(running):
        for name, process in running.items():
            if name not in ended and process.poll() is not None:
                ended[name] = time.perf_counter() - started
        time.sleep(0.05)
    return [{"machine": name, "exit": running[name].returncode, "wall_s": round(ended[name], 2),
             "output": (logs / f"{name}.log").read_text(errors="replace")} for name in running]


# --- what the server holds ----------------------------------------------------------------------

def expected_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every epoch and iteration metric a finished training logged, from the tables it wrote:
    epoch metrics at step = epoch, iteration metrics as step/<name>."""
    points: dict[str, list[tuple[int, float]]] = {}
    for table, prefix, index in (("history.csv", "", "epoch"), ("steps.csv", "step/", "step")):
        with open(run_dir / table) as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    try:
                        number = float(value)
                    except (TypeError, ValueError):
                        continue
                    if key not in ("epoch", "step") and number == number:
                        points.setdefault(prefix + key, []).append((int(row[index]), number))
    return points


def audit(client, experiment: str, machines: list[Machine], names: dict[str, str]) -> list[str]:
    """What is wrong with the runs the machines logged (empty when nothing is): one FINISHED run per
    machine, each epoch and iteration metric exactly once with the value the training wrote, each
    epoch's sample grid once, the evaluation's metrics, the files and both generator models, all on
    the server."""
    problems = []
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    by_name = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    for machine in machines:
        name = names[machine.name]
        found = by_name.get(name, [])
        if [r.info.status for r in found] != ["FINISHED"]:
            problems.append(f"{name}: runs {[r.info.status for r in found]}, expected one FINISHED")
            continue
        run = found[0]
        if not run.info.artifact_uri.startswith("mlflow-artifacts:"):
            problems.append(f"{name}: artifacts at {run.info.artifact_uri}, not on the server")
        run_dir = machine.repo / "runs" / name
        trained = expected_points(run_dir)
        for key, wanted in trained.items():
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            if [s for s, _ in logged] != sorted(s for s, _ in wanted):
                problems.append(f"{name}: {key} logged at steps {[s for s, _ in logged]}, trained {sorted(s for s, _ in wanted)}")
            elif any(abs(a - b) > 1e-9 * max(1.0, abs(b)) for (_, a), (_, b) in zip(logged, sorted(wanted))):
                problems.append(f"{name}: {key} values differ from {run_dir}/")
        evaluated = json.loads((run_dir / "metrics.json").read_text())
        for key, value in evaluated.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                history = client.get_metric_history(run.info.run_id, f"eval/{key}")
                if len(history) != 1:
                    problems.append(f"{name}: eval/{key} logged {len(history)} times")
        grids = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
        grid_epochs = sorted(int(p.split("+step+")[1].split("+")[0]) for p in grids if "/samples+step+" in p)
        if grid_epochs != sorted(epoch for epoch, _ in trained["loss_d"]):
            problems.append(f"{name}: sample grids logged for epochs {grid_epochs}")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        for wanted in ("history.csv", "steps.csv", "samples", "generator", "generator_best", "metrics.json"):
            if wanted not in artifacts:
                problems.append(f"{name}: artifact {wanted} missing (has {sorted(artifacts)})")
        for model in ("generator", "generator_best"):
            files = {a.path for a in client.list_artifacts(run.info.run_id, model)}
            if f"{model}/MLmodel" not in files or f"{model}/data" not in files:
                problems.append(f"{name}: model {model} incomplete ({sorted(files)})")
    unexpected = sorted(set(by_name) - set(names.values()))
    if unexpected:
        problems.append(f"runs no machine trained: {unexpected}")
    return problems


SERVER_ERRORS = ("database is locked", "Traceback", "OperationalError", "IntegrityError", " 500 ", " 503 ")
CLIENT_TROUBLE = ("not reachable", "left RUNNING", "Traceback", "database is locked")


def trouble(text: str, signs: tuple[str, ...]) -> list[str]:
    """The lines of a log that show an error or a request the server did not serve."""
    return [line for line in text.splitlines() if any(s in line for s in signs)]
