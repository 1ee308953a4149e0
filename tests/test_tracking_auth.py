"""An authenticated tracking server (MLflow's basic-auth app, on loopback) as docs/operations.md
starts it: users made by tools/tracking_users.py; missing or wrong credentials, or a user who may
only read, stop `dvc repro` before any work with one line naming the server and what to set; no
credential reaches a logged param, tag or artifact, or a file DVC tracks; and the artifacts live on
the server (still served once the clone that logged them is gone)."""
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import stop_mlflow_server
from tests.dvc_repo import DVC, down_scaled_default, git_env, study_repo
from tests.shared_server import start_auth_server

EXPERIMENT = "mlp_mnist_minimax_s0"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server with a trainer and a reader; the study's experiment exists, made by someone else
    (MLflow lets any user make a new one, and its maker may write there: a reader is a reader of the
    experiments others made)."""
    server = start_auth_server(tmp_path_factory.mktemp("auth"), workers=1)
    server.add_user("trainer-a", "trainer")
    server.add_user("alice", "reader")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.admin_env().items():
            patch.setenv(key, value)
        MlflowClient(server.url).create_experiment(down_scaled_default()["experiments"][EXPERIMENT]["study"])
    yield server
    stop_mlflow_server(server.process)


@pytest.fixture()
def repo(tmp_path):
    params = down_scaled_default()
    params["experiments"] = {EXPERIMENT: params["experiments"][EXPERIMENT]}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    return study_repo(tmp_path, params)


def repro(repo: Path, url: str, **credentials) -> subprocess.CompletedProcess:
    env = git_env(MLFLOW_TRACKING_URI=url, HOME=str(repo.parent / "home"), **credentials)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if name not in credentials:
            env.pop(name, None)
    return subprocess.run(DVC + ["repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("case", ["none", "wrong password", "wrong password in ~/.mlflow/credentials",
                                  "reader"])
def test_refused_credentials_stop_the_pipeline_before_any_work_with_one_line(server, repo, case):
    credentials = {}
    if case == "wrong password":
        credentials = {"MLFLOW_TRACKING_USERNAME": "trainer-a", "MLFLOW_TRACKING_PASSWORD": "not-" + server.users["trainer-a"]}
    elif case.endswith("credentials"):
        (repo.parent / "home" / ".mlflow").mkdir(parents=True)
        (repo.parent / "home" / ".mlflow" / "credentials").write_text(
            "[mlflow]\nmlflow_tracking_username = trainer-a\nmlflow_tracking_password = wrong-one\n")
    elif case == "reader":
        credentials = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": server.users["alice"]}
    done = repro(repo, server.url, **credentials)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(f"ganlab: MLflow server {server.url}")]
    assert len(lines) == 1, output[-3000:]
    expected = {"none": "asks for a user and password and none is set: set MLFLOW_TRACKING_USERNAME",
                "wrong password": "refused user 'trainer-a' (wrong password, or no such user)",
                "wrong password in ~/.mlflow/credentials": "refused user 'trainer-a' (wrong password",
                "reader": "does not let user 'alice' write to the experiment 'generator_loss'"}[case]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in output
    assert not (repo / "data" / "prepared").exists() and not (repo / "runs").exists()  # nothing was done


def test_a_trainer_runs_the_pipeline_and_no_credential_reaches_the_store_or_the_files(server, repo):
    user, password = "trainer-a", server.users["trainer-a"]
    done = repro(repo, server.url, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    admin = MlflowClient(server.url)
    secrets_ = [password.encode(), server.admin_password.encode()]
    tracked = [p for folder in ("data", "runs", "models", "results") for p in (repo / folder).rglob("*") if p.is_file()]
    tracked += [repo / "dvc.lock", repo / "params.yaml"]
    assert len(tracked) > 20
    leaked = [str(p) for p in tracked if any(s in p.read_bytes() for s in secrets_)]
    # the artifacts went to the server, not to a folder of this machine: gone with the clone, still served
    shutil.rmtree(repo)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.admin_env().items():
            patch.setenv(key, value)
        runs = admin.search_runs([e.experiment_id for e in admin.search_experiments()])
        assert [(r.info.run_name, r.info.status) for r in runs] == [(EXPERIMENT, "FINISHED")]
        assert runs[0].info.artifact_uri.startswith("mlflow-artifacts:"), runs[0].info.artifact_uri
        logged = str(runs[0].data.params) + str(runs[0].data.tags)
        artifacts = Path(admin.download_artifacts(runs[0].info.run_id, "", str(repo.parent / "artifacts")))
    assert (artifacts / "generator" / "MLmodel").is_file()
    assert not any(s.decode() in logged for s in secrets_)
    served = [p for p in artifacts.rglob("*") if p.is_file()]
    leaked += [str(p) for p in served if any(s in p.read_bytes() for s in secrets_)]
    assert len(served) > 5 and leaked == []
