"""Is the MLP control's class dropping ganlab's doing? The same GAN in a hand-written loop.

studies/cpu.yaml's `control_mlp_mnist_s*` (the textbook MLP GAN on the 8,000 embedded MNIST
images, 100 epochs) drew digits the MNIST classifier is confident of but left out some classes,
until its D got dropout (`d_dropout`) and G an EMA. This script trains the control's networks
(pipeline.nets.mlp, the control's options, D without dropout unless --d-dropout) on the same
prepared images with a plain loop written from the textbook (Adam 2e-4 / (0.5, 0.999), batch 64,
z ~ N(0, 1), non-saturating BCE from logits, no ganlab trainer, no EMA, no D-step tricks), and
every 10 epochs classifies 2,000 samples with the same dataset classifier: mean max-probability,
the share of samples per predicted class, and the classes holding at least 5% of them (the
report's `classes_covered`). If this loop drops the same classes, the pipeline is not the cause.
Writes the `mlp_reference` entry of benchmarks/results.json.

    python benchmarks/mlp_reference.py                # 100 epochs, seed 0: ~10 min on 1 core
    python benchmarks/mlp_reference.py --epochs 30 --seed 1

Runs in a temporary workspace (its own prepared data and classifier), offline, one torch thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.default_run import cpu_model  # noqa: E402

CONTROL = "control_mlp_mnist_s0"
RESULTS = REPO / "benchmarks" / "results.json"
SAMPLES = 2000


def control_params() -> dict:
    """studies/cpu.yaml reduced to the control (its options resolved as ganlab resolves them) and its dataset."""
    params = yaml.safe_load((REPO / "studies" / "cpu.yaml").read_text())
    entry = {k: v for k, v in params["experiments"][CONTROL].items() if k != "<<"}
    params["datasets"] = {entry["dataset"]: params["datasets"][entry["dataset"]]}
    params["experiments"] = {CONTROL: entry}
    params.pop("studies", None)
    return params


def class_shares(G, classifier, z_dim: int) -> dict:
    """Confidence and class histogram of SAMPLES images from G (fixed latents)."""
    from pipeline.evaluate.classifier import predict

    G.eval()
    with torch.no_grad():
        z = torch.randn(SAMPLES, z_dim, generator=torch.Generator().manual_seed(123))
        images = ((G(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    G.train()
    top, predicted = predict(classifier, images).softmax(1).max(1)
    counts = torch.bincount(predicted, minlength=10)
    return {"confidence": float(top.mean()), "classes_covered": int((counts >= SAMPLES * 0.05).sum()),
            "class_counts": counts.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--d-dropout", type=float, default=0.0, help="D's dropout (the control now uses 0.3)")
    args = parser.parse_args()
    os.environ.setdefault("GANLAB_OFFLINE", "1")
    torch.set_num_threads(1)
    params = control_params()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        from pipeline.core import layout
        from pipeline.evaluate.classifier import load_dataset_classifier
        from pipeline.core.config import load_params, resolve_experiment
        from pipeline.data.prepare import load_prepared
        from pipeline.nets import mlp
        from stages.classifier import classifier
        from stages.prepare import prepare

        cfg = resolve_experiment(load_params(), CONTROL)
        prepare(cfg.dataset)
        classifier(cfg.dataset)
        images = load_prepared(layout.prepared_dir(cfg.dataset)).images.float() / 127.5 - 1
        judge, _ = load_dataset_classifier(layout.classifier_path(cfg.dataset), torch.device("cpu"))
        torch.manual_seed(args.seed)
        options = mlp.Options(**{**cfg.model_args, "d_dropout": args.d_dropout})
        G, D = mlp.build(options, z_dim=cfg.z_dim, channels=1, resolution=28)
        for layer in [*G.modules(), *D.modules()]:
            if isinstance(layer, torch.nn.Linear):  # DCGAN-style init, as ganlab's trainer
                torch.nn.init.normal_(layer.weight, 0.0, 0.02)
                torch.nn.init.zeros_(layer.bias)
        opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
        batch, curve, started = 64, {}, time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            order = torch.randperm(len(images))
            for i in range(len(images) // batch):
                real = images[order[i * batch:(i + 1) * batch]]
                fake = G(torch.randn(batch, cfg.z_dim))
                loss_d = F.softplus(-D(real).logits).mean() + F.softplus(D(fake.detach()).logits).mean()
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()
                loss_g = F.softplus(-D(fake).logits).mean()
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
            if epoch % 10 == 0 or epoch == args.epochs:
                curve[epoch] = class_shares(G, judge, cfg.z_dim)
                print(f"epoch {epoch}: {curve[epoch]}", flush=True)
    result = {
        "what": f"{CONTROL}'s networks (D dropout {args.d_dropout}) and data in a hand-written textbook loop, seed {args.seed}: "
                f"confidence and class counts of {SAMPLES} samples in the MNIST classifier",
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "epochs": args.epochs, "train_s": time.perf_counter() - started, "curve": curve,
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["mlp_reference"] = result
    RESULTS.write_text(json.dumps(results, indent=2))
    last = curve[args.epochs]
    print(f"after {args.epochs} epochs: confidence {last['confidence']:.3f}, {last['classes_covered']} classes "
          f"covered, counts {last['class_counts']}; written to {RESULTS}")


if __name__ == "__main__":
    main()
