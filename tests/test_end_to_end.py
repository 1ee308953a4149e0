"""`dvc repro` for real: the pipeline copied into a fresh git repo with a down-scaled copy of the
default params.yaml (its `smoke` profile, one experiment of each kind) on the embedded data,
tracked by a real `mlflow server` on loopback; and a dataset that cannot be had failing only the
stages that need it."""
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ICONS64, REPO_ROOT, free_port, start_mlflow_server, stop_mlflow_server

# One experiment of each kind in the default studies (seed 0), plus a second loss and a second
# seed of the MLP GAN, so the report has something to compare.
KEPT = ["mlp_mnist_minimax_s0", "mlp_mnist_minimax_s1", "mlp_mnist_non_saturating_s0", "dcgan_fmnist32_hinge_s0",
        "acgan_kmnist5_s0", "projected_icons_s0", "improved_icons_mbd_s0"]


def down_scaled_default() -> dict:
    """The repository's params.yaml with the smoke profile and only the KEPT experiments (and the
    datasets they use): the same definitions, a few seconds each."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["experiments"] = {name: params["experiments"][name] for name in KEPT}
    used = {entry["dataset"] for entry in params["experiments"].values()}
    params["datasets"] = {name: ds for name, ds in params["datasets"].items() if name in used}
    params["metrics"]["classifier"]["width"] = 8
    return params


def study_repo(root: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding what a clone holds (code, dvc.yaml, embedded data)."""
    repo = root / "study"
    repo.mkdir()
    for item in ("pipeline", "stages", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/plots",
                 "data/embedded"):
        src, dst = REPO_ROOT / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh(["git", "init", "-q"], repo, git_env())
    sh(["git", "add", "-A"], repo, git_env())
    sh(["git", "commit", "-qm", "study"], repo, git_env())
    return repo


def git_env(**extra) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GANLAB_OFFLINE": "1", **extra}
    env.pop("PYTHONPATH", None)
    env.pop("GANLAB_DATA_DIRS", None)
    return env


DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture()
def mlflow_server(tmp_path_factory):
    url, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), free_port())
    yield url
    stop_mlflow_server(proc)


def sh(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def test_dvc_repro_end_to_end(tmp_path, mlflow_server):
    params = down_scaled_default()
    repo = study_repo(tmp_path, params)
    env = git_env(MLFLOW_TRACKING_URI=mlflow_server, TORCH_HOME=str(tmp_path / "torch_home"),
                  HOME=str(tmp_path / "home"))

    out = sh(DVC + ["repro"], repo, env)
    experiments = list(params["experiments"])
    for name in experiments:
        assert f"train@{name}" in out and f"evaluate@{name}" in out
        metrics = json.loads((repo / "runs" / name / "metrics.json").read_text())
        extractor = "effnet" if "icons" in name else "classifier"
        for key in ("fid", "is", "kid", "best_fid", "best_is", "best_kid"):
            assert math.isfinite(metrics[f"{key}_{extractor}"]), (name, key)
        assert metrics[f"fid_{extractor}"] > 0 and metrics[f"is_{extractor}"] >= 1
        # the smoke profile's 200 samples, unless the entry sets its own (the icon studies: 250)
        assert metrics["n_fake"] == params["experiments"][name].get("n_fake", 200) and metrics["best_epoch"] == 1
        assert metrics["n_real"] == (164 if name.startswith("projected") else 200)  # icons128 has 164 images
        assert not any("inception" in key for key in metrics), "inception is not measured by default"
    # stand-ins say so in metrics.json, the MLflow run, the report's rows and its plot titles
    dcgan = json.loads((repo / "runs" / "dcgan_fmnist32_hinge_s0" / "metrics.json").read_text())
    assert dcgan["stands_in_for"] == "CIFAR-10" and dcgan["dataset"] == "fmnist32"
    assert dcgan["data"] == "Fashion-MNIST test split: 8,000 training images / 2,000 held out, 32 px, grey"
    acgan = json.loads((repo / "runs" / "acgan_kmnist5_s0" / "metrics.json").read_text())
    assert 0 <= acgan["cond_acc"] <= 1 and acgan["classes_covered"] <= 5
    assert acgan["stands_in_for"].startswith("Kuzushiji-49's first 5 classes")
    assert len(json.loads((repo / "runs" / "acgan_kmnist5_s0" / "classes.json").read_text())["checkpoint"]["cond_acc_per_class"]) == 5
    for dataset, test_images in (("mnist", 2000), ("fmnist32", 2000), ("kmnist5", 1000), ("icons64", 117)):
        report = json.loads((repo / "models" / "classifier" / f"{dataset}.json").read_text())
        assert 0 <= report["accuracy"] <= 1 and report["num_test_images"] == test_images  # the held-out images
    mnist_classifier = json.loads((repo / "models" / "classifier" / "mnist.json").read_text())
    assert mnist_classifier["floor"] == 0.97 and mnist_classifier["reliable"] is False
    mlp = json.loads((repo / "runs" / "mlp_mnist_minimax_s0" / "metrics.json").read_text())
    assert mlp["classifier_accuracy"] == mnist_classifier["accuracy"] and mlp["classifier_reliable"] is False

    summary = pd.read_csv(repo / "results" / "summary.csv")
    assert sorted(summary["experiment"]) == sorted(experiments)
    assert set(summary["loss"]) == {"minimax", "non_saturating", "hinge"}
    rows = summary.set_index("experiment")
    assert rows.loc["acgan_kmnist5_s0", "num_classes"] == 5
    assert rows.loc["dcgan_fmnist32_hinge_s0", "data_label"] == "fmnist32 (stand-in for CIFAR-10)"
    plots = sorted(p.name for p in (repo / "results" / "plots").glob("*.png"))
    assert "generator_loss_fid_cheap_vs_epoch.png" in plots and "generator_loss_fid_classifier_by_loss.png" in plots
    assert {"acgan_classes_cond_acc_vs_classes.png", "acgan_classes_class_loss_vs_step.png",
            "acgan_classes_per_class_accuracy.png", "projected_gan_fid_vs_train_time_s.png"} <= set(plots)
    report = (repo / "results" / "report.md").read_text()
    assert all(f"plots/{p}" in report for p in plots)
    assert "| 000 | 5 classes: acgan/minimax draws the requested class | conditional accuracy" in report
    pages = {p.stem: p.read_text() for p in (repo / "results" / "studies").glob("*.md")}
    assert set(pages) == set(summary["study"]) and "[generator_loss](studies/generator_loss.md)" in report
    for page in pages.values():  # each page stands alone: its plots resolve from results/studies/
        linked = [line.split("](../")[1].rstrip(")") for line in page.splitlines() if line.startswith("![")]
        assert linked and all((repo / "results" / link).exists() for link in linked)
        assert "**Reproduce** (with this `params.yaml`, profile `smoke`): `dvc repro " in page
        command = page.split("profile `smoke`): `", 1)[1].split("`", 1)[0]  # what the page tells a user to run
        dry = sh(DVC + shlex.split(command)[1:] + ["--dry"], repo, env)
        assert "didn't change" in dry or "up to date" in dry, dry[-2000:]
    assert "| 004 | mlp on mnist" in pages["generator_loss"] and "**Wall time:**" in pages["generator_loss"]
    assert "| fmnist32 (stand-in for CIFAR-10) |" in report and "**stands in for CIFAR-10**" in report
    assert "below its floor 0.97: every classifier metric on this data is unreliable" in report
    assert "(unreliable: classifier below its floor)" in report
    assert "**What this scale can and cannot tell:**" in report and "**Question:** Does the generator loss matter?" in report

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    study = client.get_experiment_by_name("generator_loss")
    runs = client.search_runs([study.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(e for e in experiments if e.startswith(("mlp", "dcgan")))
    acgan_runs = client.search_runs([client.get_experiment_by_name("acgan_classes").experiment_id])
    assert [r.info.run_name for r in acgan_runs] == ["acgan_kmnist5_s0"]
    assert "eval/cond_acc" in acgan_runs[0].data.metrics and "step/cls_ratio" in acgan_runs[0].data.metrics
    for run in runs:
        assert run.info.status == "FINISHED"
        assert math.isfinite(run.data.metrics["eval/fid_classifier"]) and "loss_d" in run.data.metrics
        assert run.data.tags["profile"] == "smoke" and len(run.data.tags["git_commit"]) == 40
        assert run.data.tags["group"] == f"{run.data.params['model']}/{run.data.params['loss']} on {run.data.params['dataset']}"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"history.csv", "metrics.json", "progress.gif", "last.pt", "samples"} <= artifacts
    tags = {r.info.run_name: r.data.tags for r in runs}
    assert tags["dcgan_fmnist32_hinge_s0"]["stands_in_for"] == "CIFAR-10"
    assert tags["dcgan_fmnist32_hinge_s0"]["data"].startswith("Fashion-MNIST test split")

    shown = sh(DVC + ["metrics", "show"], repo, env)
    assert "fid_classifier" in shown and "balanced_accuracy" in shown
    sh(DVC + ["plots", "show", "-o", str(tmp_path / "plots_html")], repo, env)
    assert (tmp_path / "plots_html" / "index.html").exists()
    # the top-level plots: one chart per metric, every evaluated run's per-epoch curve on it, by study
    shown = json.loads(sh(DVC + ["plots", "show", "--json"], repo, env))
    assert not shown.get("errors"), shown["errors"]
    for chart in ("FID over epochs (cheap extractor)", "IS over epochs (cheap extractor)"):
        values = shown["data"][chart][0]["content"]["data"]["values"]
        assert {v["experiment"] for v in values} == set(experiments), chart
        assert {v["study"] for v in values} == set(summary["study"])

    # nothing changed -> nothing runs but the image-folder check, no new MLflow runs
    assert sh(DVC + ["status"], repo, env).split() == ["sources:", "always", "changed"]
    again = sh(DVC + ["repro"], repo, env)
    assert [line for line in again.splitlines() if line.startswith("Running stage")] == ["Running stage 'sources':"]
    assert len(client.search_runs([study.experiment_id])) == len(runs)

    # editing one experiment re-runs only its stages (and the aggregate)
    params["experiments"]["dcgan_fmnist32_hinge_s0"]["lr_d"] = 1e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    edited = sh(DVC + ["repro"], repo, env)
    ran = sorted(line.split("'")[1] for line in edited.splitlines() if line.startswith("Running stage"))
    assert ran == ["aggregate", "evaluate@dcgan_fmnist32_hinge_s0", "sources", "train@dcgan_fmnist32_hinge_s0"]


def test_an_image_folder_changed_on_disk_is_prepared_again_and_checked(tmp_path):
    """Issue 14, F10: DVC cannot see inside an image folder outside its outputs, so the `sources`
    stage fingerprints it on every `dvc repro`. An added image re-prepares that dataset (and no
    other); an unchanged folder re-prepares nothing; an image corrupted in place is read and
    named, not skipped because DVC thought the data unchanged."""
    folder = tmp_path / "folder"
    for category in ("apps", "devices"):
        (folder / category).mkdir(parents=True)
        for icon in sorted((ICONS64 / category).glob("*.png"))[:12]:
            shutil.copy(icon, folder / category / icon.name)
    params = down_scaled_default()
    params["datasets"]["folder"] = {"source": "imagefolder", "path": str(folder), "resolution": 32, "split": "all"}
    repo = study_repo(tmp_path, params)
    env = git_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", HOME=str(tmp_path / "home"))
    meta = repo / "data" / "prepared" / "folder" / "meta.json"

    def prepared_stages() -> list[str]:
        out = sh(DVC + ["repro", "prepare@folder", "prepare@mnist"], repo, env)
        return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))

    assert prepared_stages() == ["prepare@folder", "prepare@mnist", "sources"]
    assert json.loads(meta.read_text())["num_images"] == 24
    assert prepared_stages() == ["sources"]
    shutil.copy(sorted((ICONS64 / "apps").glob("*.png"))[20], folder / "apps" / "added.png")
    assert prepared_stages() == ["prepare@folder", "sources"]
    assert json.loads(meta.read_text())["num_images"] == 25
    damaged = folder / "devices" / sorted(p.name for p in (folder / "devices").iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated in place: the same name
    failed = subprocess.run(DVC + ["repro", "prepare@folder"], cwd=repo, env=env, capture_output=True, text=True)
    message = failed.stdout + failed.stderr
    assert failed.returncode != 0 and f"{damaged}: not a readable image" in message and "Traceback" not in message


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
    """Issue 14, item 7 (README, "Many machines"): two clones stand in for two machines and run
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
    params["profiles"]["smoke"].update(epochs_scale=1.0, max_epochs=3)
    params["experiments"] = {"mlp_mnist_minimax_s0": {**params["experiments"]["mlp_mnist_minimax_s0"], "epochs": 3}}
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    repos, envs = {}, {}
    for name in ("reference", "killed"):
        (tmp_path / name).mkdir()
        repos[name] = study_repo(tmp_path / name, params)
        envs[name] = git_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / name / 'mlflow.db'}", HOME=str(tmp_path / "home"))
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
