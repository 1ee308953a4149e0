"""One experiment trained by two processes (DDP under torchrun, gloo on the CPU) against one process.

The two-process run takes the same global batches, latents and synchronised batch norm as the
one-process run, so its losses follow the one-process run's up to float summation order. Measured
on this CPU (DCGAN, batch 32, fp32): |loss difference| 5e-7 at step 1, at most 4.4e-5 over steps
1-4 and 8e-4 over 16 steps; with batch norm per process instead of synchronised it is 5e-4 at step
1 and 6.5e-3 by step 4. The tolerance below (2e-4 over the first four steps) separates the two.
"""
import csv
import json
import os
import subprocess
import sys

import mlflow
import pytest
import torch
import yaml

from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.callbacks import FAULT_ENV
from stages.prepare import prepare
from tests.conftest import REPO_ROOT
from tests.test_train import PARAMS, STEPS_PER_EPOCH, train_subprocess

TOLERANCE = 2e-4  # |loss_d|, |loss_g| difference per step over the first four steps (see the docstring)


def torchrun(cwd, experiment, processes=2, **env):
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(processes), "-m", "stages.train", experiment], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture()
def two_workspaces(tmp_path, monkeypatch):
    """Two directories with the same params (every iteration logged) and prepared data, own MLflow stores."""
    params = {**PARAMS, "defaults": {**PARAMS["defaults"], "log_every": 1}}
    # a class head pre-trained on real images first (D's real/fake head unused then), random labels
    # for G, noisy D targets: every random draw of an iteration, and a step that leaves parameters idle
    params["experiments"] = {**PARAMS["experiments"], "acgan": {
        "study": "t", "model": "acgan", "dataset": "fmnist", "loss": "non_saturating", "epochs": 1,
        "pretrain_classifier_epochs": 1, "fake_labels": "uniform",
        "label_noise": {"real": [0.8, 1.0], "fake": [0.0, 0.2]}}}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    (one / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(one)
    prepare("fmnist")
    two.mkdir()
    os.symlink(one / "data", two / "data")
    # the same experiment with `processes: 2` (not part of what the run trains: same fingerprint)
    for name in ("dcgan", "acgan"):
        params["experiments"][name] = {**params["experiments"][name], "processes": 2}
    (two / "params.yaml").write_text(yaml.safe_dump(params))
    return one, two


def losses(run_dir, names=("loss_d", "loss_g")):
    rows = list(csv.DictReader(open(run_dir / "steps.csv")))
    return [(int(r["step"]), *(float(r[k]) for k in names)) for r in rows]


def test_two_processes_train_like_one_and_resume_after_a_kill(two_workspaces):
    one, two = two_workspaces
    single = train_subprocess(one, "dcgan", MLFLOW_TRACKING_URI=f"sqlite:///{one / 'mlflow.db'}")
    assert single.returncode == 0, single.stderr[-3000:]

    store = f"sqlite:///{two / 'mlflow.db'}"
    killed = torchrun(two, "dcgan", MLFLOW_TRACKING_URI=store, **{FAULT_ENV: str(STEPS_PER_EPOCH + 3)})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert not (two / "runs/dcgan/checkpoints").exists()
    # as `dvc repro` runs it: `processes: 2` makes the stage start itself under torchrun
    resumed = train_subprocess(two, "dcgan", MLFLOW_TRACKING_URI=store)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training in 2 processes" in resumed.stderr
    assert resumed.stderr.count("resuming after epoch 1 in 2 processes") == 1  # rank 0 speaks for both

    a, b = losses(one / "runs/dcgan"), losses(two / "runs/dcgan")
    assert [s for s, *_ in a] == [s for s, *_ in b] == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # same global batches
    for (step, d1, g1), (_, d2, g2) in zip(a[:4], b[:4]):
        assert abs(d1 - d2) <= TOLERANCE and abs(g1 - g2) <= TOLERANCE, (step, d1, d2, g1, g2)
    assert a[0][1] != a[3][1], "the losses moved: a test of nothing otherwise"

    # the checkpoint of the two-process run is the plain nets: the one-process evaluation loads it
    checkpoint = load_checkpoint(two / "runs/dcgan/checkpoints/last.pt")
    G, G_single = checkpoint.generator(), load_checkpoint(one / "runs/dcgan/checkpoints/last.pt").generator()
    z = torch.randn(8, checkpoint.architecture.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (G(z) - G_single(z)).abs().max() < 0.05  # 16 steps later, still the same generator
    assert json.loads((two / "runs/dcgan/train.json").read_text())["processes"] == 2

    # one MLflow run, resumed, not one per process or per sitting
    # (a client of its own: mlflow.set_tracking_uri would outlive this test and redirect later ones)
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.status, r.data.tags["processes"]) for r in runs] == [("FINISHED", "2")]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_d")] == [1, 2]


def test_two_processes_pretrain_a_class_head_and_draw_labels_and_label_noise_like_one(two_workspaces):
    one, two = two_workspaces
    single = train_subprocess(one, "acgan", MLFLOW_TRACKING_URI=f"sqlite:///{one / 'mlflow.db'}")
    assert single.returncode == 0, single.stderr[-3000:]
    double = train_subprocess(two, "acgan", MLFLOW_TRACKING_URI=f"sqlite:///{two / 'mlflow.db'}")
    assert double.returncode == 0, double.stderr[-3000:]
    names = ("loss_d", "loss_g", "cls_real", "cls_fake")
    a, b = losses(one / "runs/acgan", names), losses(two / "runs/acgan", names)
    assert len(a) == len(b) == STEPS_PER_EPOCH
    for row_a, row_b in zip(a[:3], b[:3]):  # measured: at most 7e-5 over the first three steps
        assert all(abs(x - y) <= TOLERANCE for x, y in zip(row_a[1:], row_b[1:])), (row_a, row_b)


def test_a_batch_that_does_not_split_over_the_processes_is_a_clear_error_before_training(two_workspaces):
    _, two = two_workspaces
    params = yaml.safe_load((two / "params.yaml").read_text())
    params["experiments"]["dcgan"]["batch_size"] = 33
    (two / "params.yaml").write_text(yaml.safe_dump(params))
    result = train_subprocess(two, "dcgan", MLFLOW_TRACKING_URI=f"sqlite:///{two / 'mlflow.db'}")
    assert result.returncode != 0
    assert result.stderr.count("ganlab: dcgan: batch_size 33 does not split evenly over 2 processes") == 1
    assert "pipeline/" not in result.stderr  # torchrun reports the failed processes; no traceback of ours
    assert not (two / "runs").exists() and not (two / "mlflow.db").exists()
