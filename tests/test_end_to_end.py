"""`dvc repro` for real: the pipeline copied into a fresh git repo with a down-scaled copy of the
default params.yaml (its `smoke` profile, one experiment of each kind) on the embedded data,
tracked by a real `mlflow server` on loopback; and an image folder edited on disk. The faults
(a dataset that cannot be had, `dvc repro` killed anywhere) and two machines sharing one remote
are in test_end_to_end_faults.py (a file of their own: the test processes share the work by file)."""
import json
import math
import re
import shlex
import shutil
import subprocess

import pandas as pd
import yaml

from tests.conftest import ICONS64, REPO_ROOT
from tests.dvc_repo import DVC, down_scaled_default, git_env, sh, study_repo


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
    assert ("| 000 | 5 classes: acgan/minimax draws the requested class (all or nearly all classes work) | 000: its "
            "ACGAN") in report  # judged in its setting, which the row names
    pages = {p.stem: p.read_text() for p in (repo / "results" / "studies").glob("*.md")}
    assert set(pages) == set(summary["study"]) and "[generator_loss](studies/generator_loss.md)" in report
    for page in pages.values():  # each page stands alone: its plots resolve from results/studies/
        linked = [line.split("](../")[1].rstrip(")") for line in page.splitlines() if line.startswith("![")]
        assert linked and all((repo / "results" / link).exists() for link in linked)
        assert "**Reproduce** (with this `params.yaml`, profile `smoke`): `dvc repro " in page
        command = page.split("profile `smoke`): `", 1)[1].split("`", 1)[0]  # what the page tells a user to run
        dry = sh(DVC + shlex.split(command)[1:] + ["--dry"], repo, env)
        assert "didn't change" in dry or "up to date" in dry, dry[-2000:]
    # 004 ran DCGAN: the MLP rows are an extension, and this run has no DCGAN pair of BCE losses
    assert "| 004 (extension) | mlp on mnist" in pages["generator_loss"] and "**Wall time:**" in pages["generator_loss"]
    assert "| 004 | IS barely differs between the two BCE generator losses | 004: DCGAN" in pages["generator_loss"]
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

    shown = sh(DVC + ["metrics", "show"], repo, env)  # the experiments' headlines, the classifiers' accuracy
    assert "headline.json" in shown and "balanced_accuracy" in shown
    check_readme_comparison(repo, env, experiments)
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


def readme_comparison_command() -> str:
    """The command README's "Compare experiments" gives (its one ```bash line)."""
    section = (REPO_ROOT / "README.md").read_text().split("### Compare experiments\n", 1)[1].split("\n#", 1)[0]
    [command] = section.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    return command


def check_readme_comparison(repo, env, experiments):
    """Issue 26: README's comparison, typed as a user types it (the shell expands its glob) in a
    200-column terminal, shows one row per experiment with its headline numbers (FID / IS / KID with
    the extractor, conditional accuracy), each as metrics.json has it, no column cut to an ellipsis."""
    shown = sh(["bash", "-c", readme_comparison_command()], repo, {**env, "COLUMNS": "200"})
    lines = shown.rstrip("\n").splitlines()
    assert "\u2026" not in shown and max(len(line) for line in lines) <= 200, shown
    [header] = [re.split(r"\s{2,}", line.strip()) for line in lines if line.startswith("Path")]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines if line.startswith("runs/")]
    table = {row[0].split("/")[1]: dict(zip(header, row)) for row in rows}
    assert sorted(table) == sorted(experiments), shown
    for name, row in table.items():
        metrics = json.loads((repo / "runs" / name / "metrics.json").read_text())
        extractor = row["extractor"]
        assert extractor == ("effnet" if "icons" in name else "classifier"), row
        for kind in ("fid", "is", "kid"):  # dvc rounds to 5 decimals
            assert row[kind] == str(round(metrics[f"{kind}_{extractor}"], 5)), (name, kind, row)
        assert row["cond_acc"] == (str(round(metrics["cond_acc"], 5)) if "cond_acc" in metrics else "-"), row


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
