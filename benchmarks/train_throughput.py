"""Images/s of one G+D training step: ganlab's loop vs a plain reference loop of the same nets.

Ours: Trainer.train_step (dataset resident as uint8, batches by index, D's parameters frozen
during G's step, channels_last, no host sync; on CUDA bf16 autocast + fused Adam). Reference:
what most GAN scripts do: a DataLoader over a normalised float TensorDataset, BCE losses,
`.item()` on both losses every step. Both run in the same process, same threads, same nets and
batch size; warm-up steps excluded; ours and the reference alternate, medians reported.

The 128 px cases (ProjectedGAN with its frozen EfficientNet projector and DiffAugment, and DCGAN
at the same size) are timed for ours only: they are the few-shot study's cost per step.

    python benchmarks/train_throughput.py            # writes benchmarks/results.json
    python benchmarks/train_throughput.py --cases dcgan-32   # re-measures one case, keeps the rest

Run it on an otherwise idle machine: on 2 cores a concurrent job halves or worse every figure.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.config import ExperimentConfig, MetricsConfig  # noqa: E402
from pipeline.env import pick_device  # noqa: E402
from pipeline.train import Trainer, build_models  # noqa: E402

# name: (model, channels, resolution, batch, extra config, compare with the reference loop)
CASES = {
    "mlp-28": ("mlp", 1, 28, 64, {}, True),
    "dcgan-32": ("dcgan", 3, 32, 64, {}, True),
    "dcgan-128": ("dcgan", 3, 128, 16, {}, False),
    "projected-128": ("projected", 3, 128, 16, {"loss": "hinge", "ema_decay": 0.999,
                                                 "augment": {"ops": ["color", "translation", "cutout"]}}, False),
    # the few-shot study's CPU stand-in runs: both generators at a quarter of the width
    "dcgan-128-ngf16": ("dcgan", 3, 128, 16, {"model_args": {"ngf": 16, "ndf": 16}}, False),
    "projected-128-ngf16": ("projected", 3, 128, 16, {"loss": "hinge", "ema_decay": 0.999, "model_args": {"ngf": 16},
                                                       "augment": {"ops": ["color", "translation", "cutout"]}}, False),
}


def config(model: str, batch: int, device: str, extra: dict) -> ExperimentConfig:
    base = dict(study="bench", model=model, dataset="synthetic", loss="non_saturating", seed=0, epochs=1,
                batch_size=batch, lr_g=2e-4, lr_d=2e-4, z_dim=100, device=device)
    return ExperimentConfig(**{**base, **extra})


def fake_dataset(n: int, channels: int, resolution: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, resolution, resolution), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(cfg, images, steps: int, warmup: int) -> float:
    prepared = SimpleNamespace(images=images, labels=torch.zeros(len(images), dtype=torch.long), meta={})
    trainer = Trainer("bench", cfg, prepared, Path("/nonexistent"), metrics_cfg=MetricsConfig())
    order = torch.randperm(len(images))
    b = cfg.batch_size
    for i in range(warmup + steps):
        if i == warmup:
            sync(trainer.device)
            start = time.perf_counter()
        idx = order[(i * b) % (len(images) - b):][:b]
        trainer.train_step(trainer.images[idx], trainer.labels[idx])
    sync(trainer.device)
    return steps * b / (time.perf_counter() - start)


def reference(cfg, images, steps: int, warmup: int) -> float:
    device = pick_device(cfg.device)
    G, D = build_models(cfg, images.shape[1], images.shape[2], 0)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d)
    bce = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(images.float() / 127.5 - 1), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for (x,) in loader:
            x = x.to(device)
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                break
            ones, zeros = torch.ones(len(x), device=device), torch.zeros(len(x), device=device)
            fake = G(torch.randn(len(x), cfg.z_dim, device=device))
            loss_d = bce(D(x).logits, ones) + bce(D(fake.detach()).logits, zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(D(fake).logits, ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            _ = (loss_d.item(), loss_g.item())  # per-step logging, as usual
            done += 1
    return steps * cfg.batch_size / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="alternate ours/reference this many times; report medians")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    device = pick_device(args.device)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    run = {"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps,
           "cpu": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cases": {}}
    for case in args.cases:
        model, channels, resolution, batch, extra, compare = CASES[case]
        cfg = config(model, batch, args.device, extra)
        images = fake_dataset(max(1024, 8 * batch), channels, resolution)
        steps = args.steps if resolution <= 32 else max(5, args.steps // 6)
        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(ours(cfg, images, steps, args.warmup if resolution <= 32 else 2))
            if compare:
                theirs.append(reference(cfg, images, steps, args.warmup))
        row = {"batch": batch, "ours_img_s": median(mine)}
        line = f"{case} (batch {batch}): ours {row['ours_img_s']:.1f} img/s"
        if compare:
            row["reference_img_s"] = median(theirs)
            row["speedup"] = row["ours_img_s"] / row["reference_img_s"]
            line += f", reference {row['reference_img_s']:.1f} img/s, ratio {row['speedup']:.2f}x"
        run["cases"][case] = row
        print(line, flush=True)
    earlier = results.get(device.type, {}).get("cases", {})
    run["cases"] = {**earlier, **run["cases"]}  # --cases re-measures those and keeps the others
    results[device.type] = run
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
