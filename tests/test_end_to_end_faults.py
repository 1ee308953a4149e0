"""`dvc repro` under faults and shared by machines: a dataset that cannot be had fails only the
stages that need it, a `dvc repro` killed anywhere and re-run ends as if never killed, two clones
share one DVC remote and one MLflow server (see tests/dvc_repo.py for the repository they run in)."""
import json
import os
import subprocess
from pathlib import Path

import pandas as pd

from tests.dvc_repo import DVC, down_scaled_default, git_env, sh, study_repo


def test_a_dataset_that_cannot_be_had_fails_only_the_stages_that_need_it(tmp_path):
    """CIFAR-10 absent offline and an icon folder that does not exist: `dvc repro` of an MLP GAN on
    the embedded MNIST still works; each missing set fails its own prepare stage, naming the
    dataset, every place looked and how to get it. A run that diverges (learning rate 100) is
    recorded as failed without stopping the others, and the report lists it with its error."""
    params = down_scaled_default()
    mlp = params["experiments"]["mlp_mnist_minimax_s0"]
    params["datasets"] = {"mnist": params["datasets"]["mnist"], "cifar10": {"source": "cifar10"},
                          "icons": {"source": "imagefolder", "path": "no/such/icons", "resolution": 64, "split": "all"}}
    params["experiments"] = {
        "mlp_mnist": mlp,
        "dcgan_cifar10": {**mlp, "model": "dcgan", "dataset": "cifar10"},
        "acgan_icons": {**mlp, "model": "acgan", "dataset": "icons"},  # conditional: would need class folders
        "mlp_diverges": {**mlp, "lr_d": 100.0, "lr_g": 100.0},
    }
    repo = study_repo(tmp_path, params)
    env = git_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", HOME=str(tmp_path / "home"))
    out = sh(DVC + ["repro", "--glob", "evaluate@mlp_*"], repo, env)  # fails if any stage fails
    assert "evaluate@mlp_mnist" in out and (repo / "runs" / "mlp_mnist" / "metrics.json").exists()
    assert "no labels" not in out
    assert "the run diverged" in out and "mlp_diverges is recorded as a failed run" in out
    diverged = json.loads((repo / "runs" / "mlp_diverges" / "metrics.json").read_text())
    assert diverged["status"] == "diverged" and "fid_classifier" not in diverged
    assert not list((repo / "runs" / "mlp_diverges" / "checkpoints").iterdir())  # no weights of a diverged run
    sh(DVC + ["repro", "-s", "aggregate"], repo, env)
    report = (repo / "results" / "report.md").read_text()
    assert "mlp_diverges (failed: mlp_diverges: " in report and "the run diverged" in report
    assert list(pd.read_csv(repo / "results" / "summary.csv")["experiment"]) == ["mlp_mnist"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    statuses = {r.info.run_name: r.info.status for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()])}
    assert statuses == {"mlp_mnist": "FINISHED", "mlp_diverges": "FAILED"}

    cifar = subprocess.run(DVC + ["repro", "prepare@cifar10"], cwd=repo, env=env, capture_output=True, text=True)
    assert cifar.returncode != 0
    message = cifar.stdout + cifar.stderr
    assert "dataset 'cifar10' (CIFAR-10) cannot be prepared: cifar-10-python.tar.gz not found" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert str(repo / "data" / "embedded" / "cifar10" / "cifar-10-python.tar.gz") in message
    assert "Traceback" not in message

    icons = subprocess.run(DVC + ["repro", "prepare@icons"], cwd=repo, env=env, capture_output=True, text=True)
    assert icons.returncode != 0
    message = icons.stdout + icons.stderr
    assert "dataset 'icons' (image folder no/such/icons) cannot be prepared: image folder no/such/icons does not exist" in message
    assert "no labels" not in message and "Traceback" not in message


def test_two_machines_share_one_dvc_remote_and_one_mlflow_server(tmp_path, mlflow_server):
    """Issue 14, item 7 (docs/operations.md, "Many machines"): two clones stand in for two machines and run
    disjoint experiments, sharing one DVC remote (a local folder standing in for S3 / SSH, run cache
    included) and one MLflow server; a third clone pulls and builds the report without preparing,
    training or evaluating anything. DVC and MLflow do the work: no scheduler of ours."""
    params = down_scaled_default()
    params["experiments"] = {name: params["experiments"][name] for name in ("mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1")}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    origin = study_repo(tmp_path, params)
    env = git_env(MLFLOW_TRACKING_URI=mlflow_server, HOME=str(tmp_path / "home"))
    sh(DVC + ["remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], origin, env)
    sh(["git", "commit", "-qam", "the shared DVC remote"], origin, env)
    machine = {}
    for name in ("one", "two", "reporter"):
        sh(["git", "clone", "-q", str(origin), name], tmp_path, env)
        machine[name] = tmp_path / name

    def ran(out: str) -> list[str]:
        return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))

    out = sh(DVC + ["repro", "evaluate@mlp_mnist_minimax_s0"], machine["one"], env)
    assert ran(out) == ["classifier@mnist", "evaluate@mlp_mnist_minimax_s0", "prepare@mnist", "sources",
                        "train@mlp_mnist_minimax_s0"]
    sh(DVC + ["push", "--run-cache"], machine["one"], env)
    sh(DVC + ["fetch", "--run-cache"], machine["two"], env)
    out = sh(DVC + ["repro", "--pull", "evaluate@mlp_mnist_minimax_s1"], machine["two"], env)
    assert ran(out) == ["evaluate@mlp_mnist_minimax_s1", "sources", "train@mlp_mnist_minimax_s1"]  # data: machine one's
    sh(DVC + ["push", "--run-cache"], machine["two"], env)

    sh(DVC + ["fetch", "--run-cache"], machine["reporter"], env)
    out = sh(DVC + ["repro", "--pull"], machine["reporter"], env)
    assert ran(out) == ["aggregate", "sources"]
    summary = pd.read_csv(machine["reporter"] / "results" / "summary.csv")
    assert sorted(summary["experiment"]) == ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1"]
    for name in summary["experiment"]:  # the very files the machines wrote, not re-made ones
        made = json.loads((machine["one" if name.endswith("s0") else "two"] / "runs" / name / "metrics.json").read_text())
        assert json.loads((machine["reporter"] / "runs" / name / "metrics.json").read_text()) == made

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("generator_loss").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("mlp_mnist_minimax_s0", "FINISHED"), ("mlp_mnist_minimax_s1", "FINISHED")]


def test_dvc_repro_killed_anywhere_then_rerun_ends_as_if_never_killed(tmp_path):
    """Issue 14, item 1: the whole `dvc repro` process group killed (SIGKILL) while preparing, after
    a training checkpoint, while evaluating and while aggregating, `dvc repro` again each time: the
    same final weights and metrics as an uninterrupted run, one FINISHED MLflow run for the
    experiment (none left RUNNING, any other one KILLED and tagged with its successor), and no lock
    to delete by hand."""
    import signal
    import time

    import torch
    from mlflow.tracking import MlflowClient

    params = down_scaled_default()
    # ten epochs of ~0.1 s, so that the kill after the first checkpoint lands mid-training on a busy
    # machine too: polling and the stage server's kill of a forked stage take tens of ms, and three
    # epochs left ~0.2 s (a full test run once failed here, most likely so)
    params["profiles"]["smoke"].update(epochs_scale=1.0, max_epochs=10)
    params["experiments"] = {"mlp_mnist_minimax_s0": {**params["experiments"]["mlp_mnist_minimax_s0"], "epochs": 10}}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    repos, envs = {}, {}
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
        repos[name] = study_repo(tmp_path / name, params)
        # one torch thread for both, as docs/operations.md advises for bit-exact repeats: otherwise each
        # stage's share follows the ganlab stages running beside it, and a thread count changes float sums
        envs[name] = git_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / name / 'mlflow.db'}", HOME=str(tmp_path / "home"),
                             OMP_NUM_THREADS="1")
    sh(DVC + ["repro"], repos["reference"], envs["reference"])

    repo, env, log = repos["killed"], envs["killed"], tmp_path / "repro.log"
    run_dir = repo / "runs" / "mlp_mnist_minimax_s0"

    def repro_killed(stage: str, then=lambda: time.sleep(1.0)) -> None:
        """`dvc repro`, its process group killed once `stage` has started and `then()` returned."""
        with open(log, "w") as out:
            proc = subprocess.Popen(DVC + ["repro"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 600
        while f"Running stage '{stage}" not in log.read_text():
            assert proc.poll() is None, f"dvc repro ended before {stage}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        then()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def first_checkpoint() -> None:
        while not (run_dir / ".partial" / "resume.pt").exists():
            time.sleep(0.05)

    repro_killed("prepare@mnist", then=lambda: time.sleep(0.5))
    repro_killed("train@", then=first_checkpoint)
    assert not (run_dir / "checkpoints").exists()  # killed mid-training, nothing published
    repro_killed("evaluate@")
    repro_killed("aggregate")
    sh(DVC + ["repro"], repo, env)

    def weights(root: Path) -> dict:
        return torch.load(root / "runs" / "mlp_mnist_minimax_s0" / "checkpoints" / "last.pt", weights_only=False)["G"]

    reference = weights(repos["reference"])
    assert all(torch.equal(reference[k], v) for k, v in weights(repo).items())

    def measured(root: Path) -> dict:
        metrics = json.loads((root / "runs" / "mlp_mnist_minimax_s0" / "metrics.json").read_text())
        return {k: v for k, v in metrics.items() if isinstance(v, float) and "time" not in k}

    assert measured(repo) == measured(repos["reference"]) and len(measured(repo)) > 10
    assert (repo / "results" / "report.md").exists()
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and not [r for r in runs if r.info.status == "RUNNING"]
    assert all(r.info.status == "KILLED" and r.data.tags.get("superseded_by") for r in runs if r not in finished)
