"""`dvc repro` for real: the pipeline copied into a fresh git repo with a small params file on
real Fashion-MNIST, tracked by a real `mlflow server` on loopback."""
import copy
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT

PARAMS = {
    "profile": "quick",
    "profiles": {
        "quick": {"epochs_scale": 0.1, "max_epochs": 2, "eval_samples": 100, "n_fake": 200, "n_real": 300},
        "paper": {},
    },
    "datasets": {"fmnist": {"source": "fashion_mnist", "split": "test", "max_images": 320},
                 "fmnist5": {"source": "fashion_mnist", "split": "test", "max_images": 320, "classes": 5}},
    "defaults": {"seed": 0, "batch_size": 32, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 32, "log_every": 5,
                 "device": "cpu"},
    "metrics": {"extractors": ["effnet", "inception", "classifier"], "cheap_extractor": "effnet", "batch_size": 100,
                "classifier": {"epochs": 3, "width": 8, "batch_size": 32}},
    "experiments": {
        "mlp_minimax": {"study": "generator_loss", "model": "mlp", "dataset": "fmnist", "loss": "minimax",
                        "epochs": 20, "z_dist": "uniform"},
        "mlp_non_saturating": {"study": "generator_loss", "model": "mlp", "dataset": "fmnist",
                               "loss": "non_saturating", "epochs": 20, "z_dist": "uniform"},
        "dcgan_hinge": {"study": "generator_loss", "model": "dcgan", "dataset": "fmnist", "loss": "hinge",
                        "epochs": 10, "model_args": {"ngf": 16, "ndf": 16}},
        "acgan_5": {"study": "acgan_classes", "model": "acgan", "dataset": "fmnist5", "loss": "minimax",
                    "epochs": 10, "z_mean": 0.5,
                    "label_noise": {"real": [0.7, 1.2], "fake": [0.0, 0.3]},
                    "model_args": {"g_width": 32, "d_width": 16, "fc_width": 128}},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def sh(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def test_dvc_repro_end_to_end(tmp_path, mlflow_server, fashion_mnist_dir):
    repo = tmp_path / "study"
    repo.mkdir()
    for item in ("pipeline", "stages", "dvc.yaml", ".dvcignore", ".gitignore"):
        src = REPO_ROOT / item
        if src.is_dir():
            shutil.copytree(src, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, repo / item)
    params = copy.deepcopy(PARAMS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": mlflow_server,
           "GANLAB_DATA_DIRS": str(fashion_mnist_dir), "TORCH_HOME": str(tmp_path / "torch_home"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PYTHONPATH", None)
    dvc = [sys.executable, "-m", "dvc"]
    sh(["git", "init", "-q"], repo, env)
    sh(dvc + ["init", "-q"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "study"], repo, env)

    out = sh(dvc + ["repro"], repo, env)
    experiments = list(params["experiments"])
    for name in experiments:
        assert f"train@{name}" in out and f"evaluate@{name}" in out
        metrics = json.loads((repo / "runs" / name / "metrics.json").read_text())
        for key in ("fid_effnet", "is_effnet", "kid_effnet", "best_fid_effnet", "best_is_effnet", "best_kid_effnet"):
            assert math.isfinite(metrics[key]), (name, key)
        assert metrics["fid_effnet"] > 0 and metrics["is_effnet"] >= 1
        assert metrics["n_fake"] == 200 and metrics["n_real"] == 300 and metrics["best_epoch"] in (1, 2)
        assert not any("inception" in key for key in metrics), "offline: inception must be skipped, not faked"
        assert math.isfinite(metrics["fid_classifier"]) and 1 <= metrics["classes_covered"] <= 10
    assert "inception metrics skipped" in out
    acgan = json.loads((repo / "runs" / "acgan_5" / "metrics.json").read_text())
    assert 0 <= acgan["cond_acc"] <= 1 and acgan["classes_covered"] <= 5
    assert len(json.loads((repo / "runs" / "acgan_5" / "classes.json").read_text())["checkpoint"]["cond_acc_per_class"]) == 5
    for dataset in ("fmnist", "fmnist5"):
        report = json.loads((repo / "models" / "classifier" / f"{dataset}.json").read_text())
        assert report["accuracy"] > 0.3 and report["test_origin"].startswith("10%")  # well above chance

    summary = pd.read_csv(repo / "results" / "summary.csv")
    assert sorted(summary["experiment"]) == sorted(experiments)
    assert set(summary["loss"]) == {"minimax", "non_saturating", "hinge"}
    assert summary.set_index("experiment").loc["acgan_5", "num_classes"] == 5
    plots = sorted(p.name for p in (repo / "results" / "plots").glob("*.png"))
    assert "generator_loss_fid_cheap_vs_epoch.png" in plots and "generator_loss_fid_effnet_by_loss.png" in plots
    assert {"acgan_classes_cond_acc_vs_classes.png", "acgan_classes_class_loss_vs_step.png",
            "acgan_classes_per_class_accuracy.png"} <= set(plots)
    report = (repo / "results" / "report.md").read_text()
    assert all(f"plots/{p}" in report for p in plots)
    assert "5 classes: ACGAN (as written: saturating G loss) conditional accuracy" in report

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    study = client.get_experiment_by_name("generator_loss")
    runs = client.search_runs([study.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(e for e in experiments if e != "acgan_5")
    acgan_runs = client.search_runs([client.get_experiment_by_name("acgan_classes").experiment_id])
    assert [r.info.run_name for r in acgan_runs] == ["acgan_5"]
    assert "eval/cond_acc" in acgan_runs[0].data.metrics and "step/cls_ratio" in acgan_runs[0].data.metrics
    for run in runs:
        assert run.info.status == "FINISHED"
        assert math.isfinite(run.data.metrics["eval/fid_effnet"]) and "loss_d" in run.data.metrics
        assert run.data.tags["profile"] == "quick" and len(run.data.tags["git_commit"]) == 40
        assert run.data.tags["group"] == f"{run.data.params['model']}/{run.data.params['loss']} on fmnist"
        assert "inception" in run.data.tags["skipped.inception"].lower()
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"history.csv", "metrics.json", "progress.gif", "last.pt", "samples"} <= artifacts

    shown = sh(dvc + ["metrics", "show"], repo, env)
    assert "fid_effnet" in shown and "balanced_accuracy" in shown
    sh(dvc + ["plots", "show", "-o", str(tmp_path / "plots_html")], repo, env)
    assert (tmp_path / "plots_html" / "index.html").exists()

    # nothing changed -> nothing runs, no new MLflow runs
    assert "Data and pipelines are up to date" in sh(dvc + ["status"], repo, env)
    again = sh(dvc + ["repro"], repo, env)
    assert "Running stage" not in again
    assert len(client.search_runs([study.experiment_id])) == len(experiments) - 1

    # editing one experiment re-runs only its stages (and the aggregate)
    params["experiments"]["dcgan_hinge"]["lr_d"] = 1e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    edited = sh(dvc + ["repro"], repo, env)
    ran = sorted(line.split("'")[1] for line in edited.splitlines() if line.startswith("Running stage"))
    assert ran == ["aggregate", "evaluate@dcgan_hinge", "train@dcgan_hinge"]
