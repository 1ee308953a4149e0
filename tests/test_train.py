"""The training loop on a real Fashion-MNIST slice: outputs, exact resume after SIGKILL, NaN guard."""
import copy
import csv
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from pipeline.core import layout
from pipeline.core.config import load_params, resolve_experiment
from pipeline.data.prepare import load_prepared
from pipeline.core.errors import TrainingDiverged
from pipeline.nets.sampling import sample_z
from pipeline.train.terms.adversarial import Adversarial
from pipeline.train.callbacks import FAULT_ENV, Callback
from pipeline.train.loop import Trainer
from stages.prepare import prepare
from tests.conftest import REPO_ROOT
from pipeline.core.rundir import RunDir

PARAMS = {
    "profile": "test",
    "profiles": {"test": {"eval_samples": 64, "n_fake": 64, "n_real": 128}},
    "datasets": {"fmnist": {"source": "fashion_mnist", "split": "test", "max_images": 256}},
    "defaults": {"seed": 3, "batch_size": 32, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 16, "log_every": 2,
                 "eval_every": 100, "device": "cpu",
                 "precision": "fp32"},  # fixed: the resume test asserts bit-exact weights
    "metrics": {"extractors": ["effnet"], "cheap_extractor": "effnet"},
    "experiments": {
        "mlp": {"study": "t", "model": "mlp", "dataset": "fmnist", "loss": "non_saturating", "epochs": 3,
                "z_dist": "uniform", "betas_d": [0.1, 0.999]},
        "dcgan": {"study": "t", "model": "dcgan", "dataset": "fmnist", "loss": "hinge", "epochs": 2,
                  "model_args": {"ngf": 8, "ndf": 8}},
    },
}
STEPS_PER_EPOCH = 256 // 32


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    """A directory laid out like the repo root: params.yaml, prepared data, a private MLflow store."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    prepare("fmnist")
    return tmp_path


def train_subprocess(cwd, experiment, **env):
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([sys.executable, "-m", "stages.train", experiment], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def weights(path):
    state = torch.load(path, weights_only=False)
    return state["G"], state["D"]


def assert_same_weights(a, b):
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for key in part_a:
            assert torch.equal(part_a[key], part_b[key]), key


def test_training_writes_every_output(workspace):
    result = train_subprocess(workspace, "dcgan")
    assert result.returncode == 0, result.stderr[-3000:]
    # stderr is a log here, not a terminal: a plain line per epoch, no bars redrawn with \r
    assert "dcgan epoch 1/2: loss_d " in result.stderr and "dcgan epoch 2/2: loss_d " in result.stderr
    assert "\r" not in result.stderr and "it/s" not in result.stderr
    run = workspace / "runs" / "dcgan"
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    assert not (run / ".partial").exists()
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    for column in ("loss_d", "loss_g", "d_real", "d_fake", "logit_real", "logit_fake", "g_grad_norm",
                   "g_out_grad_norm", "d_loss_low", "epoch_time_s"):
        assert all(float(r[column]) == float(r[column]) for r in history), column  # present, not NaN
    assert 0 < float(history[-1]["d_real"]) < 1 and float(history[-1]["g_grad_norm"]) > 0
    assert 0 < float(history[-1]["g_out_grad_norm"]) < float(history[-1]["g_grad_norm"])
    assert 0 <= float(history[-1]["d_loss_low"]) <= 1
    assert float(history[-1]["fid_cheap"]) > 0 and float(history[-1]["is_cheap"]) >= 1  # evaluated on the last epoch
    steps = list(csv.DictReader(open(run / "steps.csv")))
    assert [int(r["step"]) for r in steps] == list(range(2, 2 * STEPS_PER_EPOCH + 1, 2))
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png", "progress.gif"]
    summary = json.loads((run / "train.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 2 * STEPS_PER_EPOCH and summary["best_epoch"] == 2
    # wall time counts the per-epoch metrics and grids that train_time_s leaves out; the run names its code
    walls = [float(r["wall_time_s"]) for r in history]
    assert walls[1] > walls[0] > float(history[0]["train_time_s"])
    assert summary["wall_time_s"] == walls[-1] > summary["train_time_s"]
    assert summary["code_version"] != "" and "cores" in summary["machine"]

    import mlflow

    client = mlflow.tracking.MlflowClient()
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "dcgan"
    assert mlrun.data.params["loss"] == "hinge" and mlrun.data.tags["dvc_stage"] == "train@dcgan"
    assert len(client.get_metric_history(mlrun.info.run_id, "loss_d")) == 2
    # MLflow's UI: a model-training experiment (opens on the runs table), the commit in the Source
    # column, each epoch's grid on the run's image step slider (key "samples", steps 1 and 2)
    assert client.get_experiment(mlrun.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlrun.data.tags["mlflow.source.git.commit"] == mlrun.data.tags["git_commit"]
    # the training data as the run's dataset input, identified by the prepared arrays' content hash
    (data_input,) = mlrun.inputs.dataset_inputs
    meta = json.loads((workspace / "data/prepared/fmnist/meta.json").read_text())
    assert (data_input.dataset.name, data_input.dataset.digest) == ("fmnist", meta["content_hash"][:16])
    assert json.loads(data_input.dataset.profile)["num_images"] == 256
    assert {(t.key, t.value) for t in data_input.tags} == {("mlflow.data.context", "training")}

    # the final G as an MLflow PyTorch model that loads and samples where ganlab is not importable
    outside = workspace / "elsewhere"
    outside.mkdir()
    code = ("import sys, mlflow.pytorch, torch\n"
            "try:\n    import pipeline\nexcept ImportError:\n    pass\nelse:\n    sys.exit('pipeline importable')\n"
            f"m = mlflow.pytorch.load_model('runs:/{mlrun.info.run_id}/generator')\n"
            "x = m.sample(6, seed=1)\n"
            "torch.save({'x': x, 'y': m(torch.ones(2, m.z_dim))}, 'drawn.pt')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=outside, env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    drawn = torch.load(outside / "drawn.pt")
    assert drawn["x"].shape == (6, 1, 28, 28) and drawn["x"].dtype == torch.uint8 and drawn["x"].float().std() > 0
    from pipeline.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    with torch.no_grad():  # the logged model is the checkpoint's G
        assert torch.equal(drawn["y"], checkpoint.generator()(torch.ones(2, checkpoint.architecture.z_dim)))
    assert {"generator", "generator_best"} <= {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    images = [a.path.split("/")[-1] for a in client.list_artifacts(mlrun.info.run_id, "images")]
    image_steps = [name.split("+")[2] for name in images if name.startswith("samples+step+") and name.endswith(".png")]
    assert sorted(image_steps) == ["1", "2"]


def test_training_on_a_terminal_shows_progress_bars_with_an_eta_and_the_losses(workspace):
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160-column terminal
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", "mlp"], cwd=workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    assert proc.wait(timeout=600) == 0, shown[-3000:]
    text = shown.decode(errors="replace")
    assert "mlp epochs:" in text and ("epoch/s]" in text or "s/epoch]" in text)  # the epochs bar, its rate, ETA
    assert "mlp 2/3:" in text and "it/s" in text  # the steps bar of an epoch
    assert "loss_d=" in text and "loss_g=" in text  # the latest losses beside the bars
    assert "mlp epoch 1/3:" not in text  # the plain lines are for logs only


def test_killed_run_resumes_to_identical_weights(workspace, tmp_path_factory):
    kill_at = STEPS_PER_EPOCH + 3  # in the middle of epoch 2 of 3
    killed = train_subprocess(workspace, "mlp", **{FAULT_ENV: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL
    run = workspace / "runs" / "mlp"
    assert not (run / "checkpoints").exists(), "a killed run must not leave declared outputs"
    partial = torch.load(run / ".partial" / "resume.pt", weights_only=False)
    assert partial["epoch"] == 1 and partial["global_step"] == STEPS_PER_EPOCH

    resumed = train_subprocess(workspace, "mlp")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in resumed.stderr
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]

    clean = tmp_path_factory.mktemp("clean")
    for name in ("params.yaml", "data"):
        os.symlink(workspace / name, clean / name)
    uninterrupted = train_subprocess(clean, "mlp", MLFLOW_TRACKING_URI=f"sqlite:///{clean / 'mlflow.db'}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert_same_weights(weights(run / "checkpoints" / "last.pt"), weights(clean / "runs/mlp/checkpoints/last.pt"))
    # and the run actually learned something: weights moved away from their initialisation
    assert not torch.equal(partial["G"]["net.0.weight"], weights(run / "checkpoints" / "last.pt")[0]["net.0.weight"])


def test_partial_run_with_other_settings_is_not_resumed(workspace):
    killed = train_subprocess(workspace, "mlp", **{FAULT_ENV: str(STEPS_PER_EPOCH + 1)})
    assert killed.returncode == -signal.SIGKILL
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["experiments"]["mlp"]["lr_g"] = 1e-3
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    result = train_subprocess(workspace, "mlp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "discarding a partial run made with other settings" in result.stderr
    assert "resuming" not in result.stderr


@pytest.mark.parametrize("damaged", ["resume.pt", "best.pt"])
def test_a_damaged_saved_state_is_set_aside_and_training_starts_again(workspace, damaged):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["experiments"]["mlp"]["eval_every"] = 1  # a best.pt after epoch 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    killed = train_subprocess(workspace, "mlp", **{FAULT_ENV: str(STEPS_PER_EPOCH + 3)})
    assert killed.returncode == -signal.SIGKILL
    run = workspace / "runs" / "mlp"
    path = run / ".partial" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a crash of the disk, say
    result = train_subprocess(workspace, "mlp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the saved training state cannot be read" in result.stderr and "resuming" not in result.stderr
    (aside,) = run.glob(".partial-damaged-*")  # kept for the user, named in the message
    assert aside.name in result.stderr and (aside / damaged).exists()
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))] == [1, 2, 3]
    for name in ("last.pt", "best.pt"):  # what is published loads
        torch.load(run / "checkpoints" / name, weights_only=False)


def test_a_run_killed_before_its_first_checkpoint_is_superseded_visibly_not_left_running(workspace):
    import mlflow

    killed = train_subprocess(workspace, "mlp", **{FAULT_ENV: "3"})  # in epoch 1: no resume state yet
    assert killed.returncode == -signal.SIGKILL
    assert train_subprocess(workspace, "mlp").returncode == 0
    client = mlflow.tracking.MlflowClient()
    runs = {r.info.status: r for r in client.search_runs(
        [client.get_experiment_by_name(PARAMS["experiments"]["mlp"]["study"]).experiment_id])}
    assert sorted(runs) == ["FINISHED", "KILLED"]  # none RUNNING forever
    assert runs["KILLED"].data.tags["superseded_by"] == runs["FINISHED"].info.run_id
    assert runs["FINISHED"].data.tags["supersedes"] == runs["KILLED"].info.run_id


def test_a_resumed_run_does_not_log_the_replayed_epoch_twice(workspace):
    """Killed after logging an epoch but before saving its checkpoint (the metrics and grids of an
    epoch take seconds: a kill lands there often), the replay logs nothing twice."""
    import mlflow

    class InterruptedInEpoch2(Callback):
        def on_checkpoint(self, trainer):
            if trainer.state.epoch == 2:
                raise KeyboardInterrupt  # the epoch's metrics are logged, its checkpoint is not written

    trainer = make_trainer(workspace, "mlp")
    trainer.callbacks.insert(0, InterruptedInEpoch2())  # before the checkpoint is written
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    resumed = make_trainer(workspace, "mlp")
    resumed.fit()
    assert resumed.state.run_id == trainer.state.run_id  # the same run carries on
    client = mlflow.tracking.MlflowClient()
    epochs = [m.step for m in client.get_metric_history(trainer.state.run_id, "loss_d")]
    steps = [m.step for m in client.get_metric_history(trainer.state.run_id, "step/loss_d")]
    assert sorted(epochs) == [1, 2, 3]
    assert sorted(steps) == list(range(2, 3 * STEPS_PER_EPOCH + 1, 2))  # each logged iteration once
    assert client.get_run(trainer.state.run_id).info.status == "FINISHED"


def test_a_lost_mlflow_run_is_recreated_from_the_files_by_resumed_training_and_by_evaluate(workspace):
    """mlflow.db deleted (or another store) under a killed run, then again before evaluate: both
    carry on in a run tagged recreated_from, holding every epoch, instead of failing for good."""
    import mlflow

    killed = train_subprocess(workspace, "mlp", **{FAULT_ENV: str(STEPS_PER_EPOCH + 3)})
    assert killed.returncode == -signal.SIGKILL
    (workspace / "mlflow.db").unlink()
    resumed = train_subprocess(workspace, "mlp")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "is not in the tracking store" in resumed.stdout and "resuming after epoch 1" in resumed.stderr
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    trained_in = json.loads((workspace / "runs" / "mlp" / "train.json").read_text())["mlflow_run_id"]
    assert run.info.run_id == trained_in and run.info.status == "FINISHED" and run.data.tags["recreated_from"]
    assert sorted(m.step for m in client.get_metric_history(trained_in, "loss_d")) == [1, 2, 3]

    (workspace / "mlflow.db").unlink()
    for _ in range(2):  # the second time into the same stand-in, not another one
        evaluated = subprocess.run([sys.executable, "-m", "stages.evaluate", "mlp"], cwd=workspace, timeout=600,
                                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((workspace / "runs" / "mlp" / "metrics.json").read_text())
    assert metrics["train_run_id"] == trained_in  # the numbers still name the training they describe
    # a fresh client: this process's cached store still points at the deleted file
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{workspace}/./mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.data.tags["recreated_from"] == trained_in and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss_d")) == [1, 2, 3]
    assert "eval/fid_effnet" in run.data.metrics
    assert metrics["mlflow_run_id"] == run.info.run_id != trained_in  # the page links the run that holds them


def test_training_outlives_its_tracking_server_and_evaluate_delivers_what_it_missed(workspace, tmp_path_factory):
    """The MLflow server dies after epoch 1: training goes on at full speed (no minutes of retries),
    the run is not marked FINISHED with epochs missing, and once the server is back the evaluate
    stage delivers the rest from runs/."""
    import time

    import mlflow

    from tests.conftest import free_port, start_mlflow_server, stop_mlflow_server

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["experiments"]["mlp"]["epochs"] = 12  # time to stop the server while it trains
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    store, port = tmp_path_factory.mktemp("server"), free_port()
    url, server = start_mlflow_server(store, port)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": url}
    training = subprocess.Popen([sys.executable, "-m", "stages.train", "mlp"], cwd=workspace, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = mlflow.tracking.MlflowClient(tracking_uri=url)
    deadline = time.time() + 300

    def first_epoch_logged() -> bool:
        experiment = client.get_experiment_by_name("t")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "loss_d"))

    while not first_epoch_logged():
        assert time.time() < deadline and training.poll() is None, "training ended before epoch 1 was logged"
        time.sleep(0.2)
    stop_mlflow_server(server, signal.SIGKILL)  # gone, as a crashed machine
    stopped = time.time()
    _, stderr = training.communicate(timeout=600)
    assert training.returncode == 0, stderr[-3000:]
    assert time.time() - stopped < 120  # MLflow's default retries would stall each request for minutes
    assert "not reachable" in stderr and "left RUNNING" in stderr

    url, server = start_mlflow_server(store, port)  # back, same store
    try:
        run_id = json.loads((workspace / "runs" / "mlp" / "train.json").read_text())["mlflow_run_id"]
        before = client.get_run(run_id)
        assert before.info.status == "RUNNING"  # not FINISHED with epochs missing
        assert len(client.get_metric_history(run_id, "loss_d")) < 12
        evaluated = subprocess.run([sys.executable, "-m", "stages.evaluate", "mlp"], cwd=workspace, env=env,
                                   capture_output=True, text=True, timeout=600)
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        after = client.get_run(run_id)
        assert after.info.status == "FINISHED" and "eval/fid_effnet" in after.data.metrics
        assert sorted(m.step for m in client.get_metric_history(run_id, "loss_d")) == list(range(1, 13))
        assert "train.json" in {a.path for a in client.list_artifacts(run_id)}
    finally:
        stop_mlflow_server(server)


def test_nan_loss_stops_run_keeps_last_good_checkpoint(workspace):
    import mlflow

    params = load_params()
    cfg = resolve_experiment(params, "mlp")
    trainer = Trainer("mlp", cfg, load_prepared(layout.prepared_dir("fmnist")), RunDir.of("mlp"),
                      metrics_cfg=params.metrics)
    calls = {"n": 0}
    (adversarial,) = [term for term in trainer.terms if isinstance(term, Adversarial)]
    real_loss = adversarial.loss

    def d_loss_turning_nan(real, fake):
        calls["n"] += 1
        value = real_loss.d_loss(real, fake)
        return value * float("nan") if calls["n"] > STEPS_PER_EPOCH + 2 else value

    adversarial.loss = SimpleNamespace(d_loss=d_loss_turning_nan, g_loss=real_loss.g_loss)  # the loss, NaN after epoch 1
    with pytest.raises(TrainingDiverged, match=r"loss_d.*not finite in epoch 2"):
        trainer.fit()
    resume = torch.load(RunDir.of("mlp").staging.resume, weights_only=False)
    assert resume["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in resume["G"].values() if v.is_floating_point())
    assert not RunDir.of("mlp").checkpoints.exists()
    run = mlflow.tracking.MlflowClient().get_run(trainer.state.run_id)
    assert run.info.status == "FAILED" and "not finite" in run.data.tags["failure"]


def test_runaway_losses_stop_the_run_and_the_message_says_no_checkpoint_exists_yet(workspace):
    import mlflow

    trainer = make_trainer(workspace, "mlp", lr_d=100.0, lr_g=100.0)  # diverges at once, losses stay finite
    with pytest.raises(TrainingDiverged, match=r"epoch 1 .*the run diverged") as caught:
        trainer.fit()
    message = str(caught.value)
    assert "beyond +-1e+06" in message or "not finite" in message
    assert "no checkpoint was written before it" in message and "resume.pt" not in message
    assert not RunDir.of("mlp").checkpoints.exists()  # nothing published for evaluate
    run = mlflow.tracking.MlflowClient().get_run(trainer.state.run_id)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["failure"]


def test_a_batch_larger_than_the_data_is_a_clear_error_before_training(workspace):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"batch_size 512 x n_critic 1 = 512 real images, but dataset 'fmnist' has "
                                          r"256 to train on: lower batch_size in experiments.mlp"):
        make_trainer(workspace, "mlp", batch_size=512)
    assert not RunDir.of("mlp").staging.root.exists()  # nothing started


def make_trainer(workspace, experiment: str, **overrides) -> Trainer:
    params = load_params()
    cfg = resolve_experiment(params, experiment).model_copy(update=overrides)
    return Trainer(experiment, cfg, load_prepared(layout.prepared_dir("fmnist")), RunDir.of(experiment),
                   metrics_cfg=params.metrics)


def adam_steps(optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_best_checkpoint_is_the_lowest_fid_epoch_even_when_it_is_neither_first_nor_last(workspace, monkeypatch):
    """Lower FID is better. Cheap FIDs 30, 20, 50, 40 over four evaluated epochs: the best is epoch 2,
    where the highest (epoch 3), the first or the last would come from a reversed or missing comparison.
    best.pt holds the generator that scored 20, and train.json says so."""
    trainer = make_trainer(workspace, "mlp", epochs=4, eval_every=1)
    fids, evaluated = iter([30.0, 20.0, 50.0, 40.0]), []

    def metrics(G):  # the monitor's cheap metrics, with chosen values (and the G they scored, kept)
        evaluated.append({k: v.clone() for k, v in G.state_dict().items()})
        return {"fid_cheap": next(fids), "is_cheap": 1.0}

    monkeypatch.setattr(trainer.monitor, "metrics", metrics)
    summary = trainer.fit()
    assert len(evaluated) == 4
    assert (summary["best_epoch"], summary["best_fid_cheap"]) == (2, 20.0)
    checkpoints = workspace / "runs" / "mlp" / "checkpoints"
    best, last = (torch.load(checkpoints / name, weights_only=False) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == 2 and last["epoch"] == 4
    assert_same_weights((best["G"],), (evaluated[1],))
    assert any(not torch.equal(best["G"][k], last["G"][k]) for k in best["G"])
    history = list(csv.DictReader(open(workspace / "runs" / "mlp" / "history.csv")))
    assert [float(r["fid_cheap"]) for r in history] == [30.0, 20.0, 50.0, 40.0]


def test_wgan_gp_takes_n_critic_d_steps_per_g_step(workspace):
    trainer = make_trainer(workspace, "dcgan", loss="wgan_gp", model_args={"ngf": 8, "ndf": 8, "d_norm": "layer"})
    assert trainer.settings.n_critic == 5
    stats = trainer.train_step(trainer.images[:160], trainer.labels[:160])  # 5 batches of 32
    assert adam_steps(trainer.nets.opt_d) == 5 and adam_steps(trainer.nets.opt_g) == 1
    assert torch.isfinite(stats).all() and len(stats) == len(trainer.stat_names)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trainer.nets.D.modules())


def test_saturating_loss_gradient_vanishes_when_d_rejects_fakes(workspace):
    """The diagnostic behind the generator-loss study: with D(G(z)) ~ 0, G's gradient under the
    saturating loss is tiny, under the non-saturating one it is not (same nets, same batch)."""
    norms = {}
    for loss in ("minimax", "non_saturating"):
        trainer = make_trainer(workspace, "mlp", loss=loss, lr_d=1e-12)  # D (almost) frozen
        with torch.no_grad():
            trainer.nets.D.net[-1].bias.fill_(-15.0)  # D rejects everything: sigmoid(-15) ~ 3e-7
        torch.manual_seed(0)
        stats = dict(zip(trainer.stat_names, trainer.train_step(trainer.images[:32], trainer.labels[:32]).tolist()))
        assert stats["d_fake"] < 1e-5
        norms[loss] = stats["g_grad_norm"]
    print(f"G gradient norm at D(G(z)) ~ 3e-7: minimax {norms['minimax']:.3g}, non_saturating {norms['non_saturating']:.3g}")
    assert norms["minimax"] < 1e-4 * norms["non_saturating"]


@pytest.mark.parametrize("inference_mode", [False, True])
def test_d_step_inference_mode_shows_d_the_generator_in_inference_mode(workspace, inference_mode):
    """The MNIST write-up's D step: D sees G's batch made with dropout off and BatchNorm on running
    statistics (equal to G.eval()(z) for the same z), and G still learns in training mode."""
    trainer = make_trainer(workspace, "mlp", d_step_inference_mode=inference_mode)
    g_eval = copy.deepcopy(trainer.nets.G).eval()
    seen = []
    d_forward = trainer.nets.d_step
    trainer.nets.d_step = lambda x, y=None: seen.append(x.detach().clone()) or d_forward(x, y)
    torch.manual_seed(0)
    z = sample_z(32, trainer.cfg, device="cpu")
    torch.manual_seed(0)
    trainer.train_step(trainer.images[:32], trainer.labels[:32])
    with torch.no_grad():
        expected = g_eval(z)
    assert torch.allclose(seen[1], expected) == inference_mode  # seen: real, generated (D step), generated (G step)
    assert trainer.nets.G.training and trainer.nets.D.training
    assert adam_steps(trainer.nets.opt_g) == 1


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_dtype_of_the_training_convs(workspace, precision, dtype):
    trainer = make_trainer(workspace, "dcgan", precision=precision)
    seen = []
    for net in (trainer.nets.G, trainer.nets.D):
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.register_forward_hook(lambda m, inputs, out: seen.append(out.dtype))
    stats = trainer.train_step(trainer.images[:32], trainer.labels[:32])
    assert seen and set(seen) == {dtype}
    assert stats.dtype == torch.float32 and torch.isfinite(stats).all()  # losses are taken in fp32
    assert all(p.dtype == torch.float32 for p in trainer.nets.G.parameters())  # weights stay fp32 (autocast)


def test_auto_precision_is_bf16_only_where_the_device_computes_it(monkeypatch):
    from pipeline.core.env import pick_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert pick_precision("auto", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert pick_precision("auto", cpu) == "bf16" and pick_precision("fp32", cpu) == "fp32"


def test_a_new_term_joins_the_objective_without_touching_the_loop(workspace, monkeypatch):
    """The extension contract of pipeline.train.terms: a Term listed in TERMS adds to D's loss (D's update
    changes), logs its statistic in every table, and nothing in the loop names it."""
    from pipeline.train import terms

    class LogitPenalty(terms.Term):  # a toy variant: D's real logits pulled towards 0
        stats = ("logit_l2",)

        @classmethod
        def from_config(cls, context):
            return cls()

        def d_loss(self, step, loss):
            step.stats["logit_l2"] = step.real_logits.pow(2).mean()
            return loss + 10.0 * step.stats["logit_l2"]

    plain = make_trainer(workspace, "mlp")
    monkeypatch.setattr(terms, "TERMS", terms.TERMS + (LogitPenalty,))
    extended = make_trainer(workspace, "mlp")
    assert extended.stat_names == plain.stat_names + ("logit_l2",)
    batch = (plain.images[:32], plain.labels[:32])
    torch.manual_seed(0)
    plain.train_step(*batch)
    torch.manual_seed(0)
    stats = extended.train_step(*batch)
    assert stats[-1] > 0  # its statistic, in stat_names order
    d_plain, d_extended = plain.nets.D.state_dict(), extended.nets.D.state_dict()
    assert any(not torch.equal(d_plain[k], d_extended[k]) for k in d_plain)  # its loss reached D's optimiser
