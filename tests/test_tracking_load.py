"""Many machines writing to one authenticated tracking server at once (docs/operations.md, "The
tracking server: authenticated"): eight clones, each in a mount namespace of its own where the
other clones' folders and the server's are empty (where the test runs as root), sharing only the
server and a DVC remote, each train and evaluate its own experiment of one study at the same
moment. Nothing may be lost or doubled: every run FINISHED, every epoch and iteration metric once
with the value trained, the evaluation, the files and the generator models on the server, and no
error in the server's log or the machines'.
Once with SQLite behind the server, once with PostgreSQL (skipped where it is not installed).
Throughput and slowdown are measured by benchmarks/tracking_load.py, not here."""
import warnings

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import stop_stage_servers
from tests.dvc_repo import DVC, down_scaled_default, git_env, sh, study_repo
from tests.shared_server import (CLIENT_TROUBLE, SERVER_ERRORS, audit, isolation_missing, make_machines,
                                 postgres_missing, run_at_once, tracking_server, trouble)

MACHINES = 8
STUDY = "generator_loss"


def origin_with_data(base, server_env: dict, machines: int = MACHINES) -> tuple:
    """The study (one MLP GAN per machine, seeds 0, 1, ...) with a DVC remote holding its prepared data
    and dataset classifier, as the first machine of docs/operations.md's recipe leaves it."""
    params = down_scaled_default()
    # the MLP GAN's own 2 epochs, every iteration logged: several requests of each kind per run
    params["profiles"]["smoke"].update(epochs_scale=1.0, max_epochs=3, max_log_every=1)
    template = params["experiments"]["mlp_mnist_minimax_s0"]
    params["experiments"] = {f"mlp_mnist_minimax_s{i}": {**template, "seed": i} for i in range(machines)}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    origin = study_repo(base, params)
    remote = base / "dvc-remote"
    env = git_env(HOME=str(base / "home"), **server_env)
    sh(DVC + ["remote", "add", "-d", "shared", str(remote)], origin, env)
    sh(["git", "commit", "-qam", "the shared DVC remote"], origin, env)
    sh(DVC + ["repro", "classifier@mnist"], origin, env)
    sh(DVC + ["push", "--run-cache"], origin, env)
    return origin, sorted(params["experiments"])


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    if request.param == "postgresql" and postgres_missing():
        pytest.skip(postgres_missing())
    with tracking_server(request.param) as (base, server):  # the recipe's defaults: 4 workers
        yield base, server


def test_eight_machines_at_once_lose_and_double_nothing(backend):
    base, server = backend
    password = server.add_user("trainer-a", "trainer")
    origin, experiments = origin_with_data(base, {"MLFLOW_TRACKING_URI": server.url, **server.admin_env()})
    why_not_isolated = isolation_missing()
    if why_not_isolated:
        warnings.warn(f"the machines are not isolated: {why_not_isolated}")
    machines = make_machines(base, origin, MACHINES, shared=(base / "dvc-remote",), isolated=not why_not_isolated)
    names = dict(zip((m.name for m in machines), experiments))
    envs = [m.env(MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_USERNAME="trainer-a", MLFLOW_TRACKING_PASSWORD=password)
            for m in machines]
    commands = [f"python -m dvc fetch -q --run-cache && python -m dvc repro --pull evaluate@{names[m.name]}"
                for m in machines]
    try:
        results = run_at_once(machines, commands, envs, base / "logs")
    finally:
        stop_stage_servers(m.tmpdir for m in machines)
    failed = [(r["machine"], r["output"][-2000:]) for r in results if r["exit"] != 0]
    assert failed == []
    for r in results:  # each trained its own experiment, on the first machine's data
        ran = sorted(line.split("'")[1] for line in r["output"].splitlines() if line.startswith("Running stage"))
        assert ran == [f"evaluate@{names[r['machine']]}", "sources", f"train@{names[r['machine']]}"], r["output"][-2000:]
        assert trouble(r["output"], CLIENT_TROUBLE) == []
    if not why_not_isolated:  # and they could not have read each other's files, nor the server's
        assert [m.sees(m.repo) and m.sees(base / "dvc-remote") for m in machines] == [True] * MACHINES
        assert not any(a.sees(b.repo) for a in machines for b in machines if a is not b)
        assert not any(m.sees(base / "server") or m.sees(base / "study") for m in machines)

    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.admin_env().items():
            patch.setenv(key, value)
        assert audit(MlflowClient(server.url), STUDY, machines, names) == []
    assert trouble(server.log_text(), SERVER_ERRORS) == []
