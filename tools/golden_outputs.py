"""Same code behaviour, checked by outputs: train and evaluate nine tiny experiments that together use
every training term (label noise, gradient penalty, class head with pre-training, K+1, feature
matching with the pixel term, augmentation with adaptive p, EMA, G in inference mode for D's step,
ProjectedGAN), then digest what they wrote: G / D weights, history and steps tables, sample
grids, metrics (times and run ids left out). A refactor that is meant to change nothing must
give the same digest on the CPU.

    python tools/golden_outputs.py record --repo OLD_CHECKOUT old.json    # e.g. a git worktree of main
    python tools/golden_outputs.py record --repo . new.json
    python tools/golden_outputs.py compare old.json new.json

About 6 minutes on 2 cores per record (a fresh workspace each time, in a temporary folder).
The data is the repository's embedded data (offline).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

TIMEY = ("time", "wall")  # columns and keys that differ run to run


def params(repo: Path) -> dict:
    icons = repo / "data/embedded/oxygen-icons/64x64"
    return {
        "profile": "g", "profiles": {"g": {"eval_samples": 64, "n_fake": 128, "n_real": 128}},
        "datasets": {"fm": {"source": "fashion_mnist", "split": "test", "max_images": 640, "holdout": 0.25},
                     "kmnist5": {"source": "kmnist", "split": "test", "classes": 5, "max_images": 640, "holdout": 0.2},
                     "icons": {"source": "imagefolder", "path": str(icons), "resolution": 64, "split": "all",
                               "max_images": 64}},
        "defaults": {"seed": 1, "batch_size": 32, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 16, "log_every": 2,
                     "eval_every": 1, "device": "cpu", "precision": "fp32"},
        "metrics": {"extractors": ["effnet", "classifier"], "cheap_extractor": "effnet",
                    "classifier": {"epochs": 2, "width": 16, "batch_size": 64, "lr": 3e-3}},
        "experiments": {
            "mlp": {"study": "s", "model": "mlp", "dataset": "fm", "loss": "minimax", "epochs": 2,
                    "z_dist": "uniform", "betas_d": [0.1, 0.999]},
            "dcgan_hinge": {"study": "s", "model": "dcgan", "dataset": "fm", "loss": "hinge", "epochs": 2,
                            "model_args": {"ngf": 8, "ndf": 8}, "ema_decay": 0.9,
                            "augment": {"ops": ["color", "translation", "cutout"], "adaptive": True, "p": 0.3}},
            "dcgan_wgan": {"study": "s", "model": "dcgan", "dataset": "fm", "loss": "wgan_gp", "epochs": 1,
                           "model_args": {"ngf": 8, "ndf": 8, "d_norm": "layer"}},
            "dcgan_inf": {"study": "s", "model": "dcgan", "dataset": "fm", "loss": "non_saturating", "epochs": 1,
                          "model_args": {"ngf": 8, "ndf": 8}, "d_step_inference_mode": True},
            "acgan": {"study": "a", "model": "acgan", "dataset": "kmnist5", "loss": "minimax", "epochs": 2,
                      "z_mean": 0.5, "label_noise": {"real": [0.7, 1.2], "fake": [0.0, 0.3]},
                      "pretrain_classifier_epochs": 1, "model_args": {"g_width": 32, "d_width": 16, "fc_width": 64}},
            "cgan": {"study": "a", "model": "cgan", "dataset": "kmnist5", "loss": "non_saturating", "epochs": 2,
                     "fake_labels": "batch"},
            "ssl": {"study": "i", "model": "dcgan", "dataset": "fm", "loss": "non_saturating", "epochs": 2,
                    "labeled_per_class": 10, "model_args": {"ngf": 8, "ndf": 8, "head": "k_plus_1"},
                    "feature_matching": {"layer": -1}},
            "mbd": {"study": "i", "model": "dcgan", "dataset": "fm", "loss": "non_saturating", "epochs": 1,
                    "model_args": {"ngf": 8, "ndf": 8, "minibatch_b": 4, "minibatch_c": 3},
                    "feature_matching": {"layer": 1, "adversarial": True, "pixel_weight": 1.0}},
            "proj": {"study": "p", "model": "projected", "dataset": "icons", "loss": "hinge", "epochs": 1,
                     "batch_size": 8, "model_args": {"ngf": 8, "ndf": 16}, "ema_decay": 0.5,
                     "augment": {"ops": ["color", "translation", "cutout"], "adaptive": True, "p": 0.5}},
        }}


def record(repo: Path, out: Path) -> None:
    import yaml

    repo, out = repo.resolve(), out.resolve()
    sys.path.insert(0, str(repo))  # the code under test: the checkout's, not this file's
    workspace = Path(tempfile.mkdtemp(prefix="ganlab-golden-"))
    spec = params(repo)
    (workspace / "params.yaml").write_text(yaml.safe_dump(spec))
    os.chdir(workspace)
    os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{workspace / 'mlflow.db'}", GANLAB_OFFLINE="1")
    import torch

    from pipeline.core.config import load_params
    from stages.classifier import classifier
    from stages.evaluate import evaluate
    from stages.prepare import prepare
    from stages.train import train

    loaded = load_params()
    for dataset in spec["datasets"]:
        prepare(dataset, loaded)
    for dataset in ("fm", "kmnist5"):
        classifier(dataset, loaded)

    def digest(state: dict) -> str:
        h = hashlib.sha256()
        for key in sorted(state):
            if isinstance(state[key], torch.Tensor):
                h.update(key.encode())
                h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    result = {}
    for name in spec["experiments"]:
        train(name, loaded)
        evaluate(name, loaded)
        run = workspace / "runs" / name
        r = {ck: {k: digest(v) for k, v in torch.load(run / "checkpoints" / ck, weights_only=False).items()
                  if k in ("G", "D", "D_supervised")} for ck in ("last.pt", "best.pt")}
        for table in ("history.csv", "steps.csv"):
            r[table] = [{k: v for k, v in row.items() if not any(t in k for t in TIMEY)}
                        for row in csv.DictReader(open(run / table))]
        metrics = json.loads((run / "metrics.json").read_text())
        r["metrics"] = {k: v for k, v in metrics.items()  # `data` names the checkout's path
                        if not any(t in k for t in TIMEY) and k not in ("train_run_id", "data")}
        r["classes"] = json.loads((run / "classes.json").read_text())
        summary = json.loads((run / "train.json").read_text())
        r["train"] = {k: v for k, v in summary.items()
                      if k not in ("mlflow_run_id", "code_version", "machine") and not any(t in k for t in TIMEY)}
        r["samples"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted((run / "samples").iterdir())}
        result[name] = r
        print(f"golden: {name} recorded", flush=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    shutil.rmtree(workspace)


def compare(a: Path, b: Path) -> int:
    old, new = json.loads(a.read_text()), json.loads(b.read_text())
    differences = [(name, part) for name in sorted(set(old) | set(new))
                   for part in sorted(set(old.get(name, {})) | set(new.get(name, {})))
                   if old.get(name, {}).get(part) != new.get(name, {}).get(part)]
    for name, part in differences:
        print(f"differs: {name} {part}")
    print(f"golden: {len(old)} experiments compared, " + ("identical" if not differences else f"{len(differences)} differ"))
    return 1 if differences else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    rec.add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.repo, args.out)
    else:
        sys.exit(compare(args.a, args.b))
