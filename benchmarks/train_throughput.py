"""Images/s of one G+D training step: ganlab's loop vs a plain reference loop of the same nets.

Ours: Trainer.train_step (dataset resident as uint8, batches by index, D frozen during G's
step, channels_last, no host sync). Reference: what most GAN scripts do: a DataLoader over a
normalised float TensorDataset, BCE losses, `.item()` on both losses every step.
Both run in the same process, same threads, same nets and batch size; warm-up steps excluded.

    python benchmarks/train_throughput.py            # writes benchmarks/results.json
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
from pipeline.train import Trainer, build_models  # noqa: E402

CASES = {"mlp-28": ("mlp", 1, 28), "dcgan-32": ("dcgan", 3, 32)}


def config(model: str, batch: int) -> ExperimentConfig:
    return ExperimentConfig(study="bench", model=model, dataset="synthetic", loss="non_saturating", seed=0,
                            epochs=1, batch_size=batch, lr_g=2e-4, lr_d=2e-4, z_dim=100, device="cpu")


def fake_dataset(n: int, channels: int, resolution: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, resolution, resolution), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def ours(cfg, images, steps: int, warmup: int) -> float:
    prepared = SimpleNamespace(images=images, labels=torch.zeros(len(images), dtype=torch.long), meta={})
    trainer = Trainer("bench", cfg, prepared, Path("/nonexistent"), metrics_cfg=MetricsConfig(), real_cache_key="bench")
    order = torch.randperm(len(images))
    b = cfg.batch_size
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        idx = order[(i * b) % (len(images) - b):][:b]
        trainer.train_step(trainer.images[idx], trainer.labels[idx])
    return steps * b / (time.perf_counter() - start)


def reference(cfg, images, steps: int, warmup: int) -> float:
    G, D = build_models(cfg, images.shape[1], images.shape[2], 0)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d)
    bce = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(images.float() / 127.5 - 1), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for (x,) in loader:
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                break
            z = torch.randn(len(x), cfg.z_dim)
            fake = G(z)
            loss_d = bce(D(x).logits, torch.ones(len(x))) + bce(D(fake.detach()).logits, torch.zeros(len(x)))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(D(fake).logits, torch.ones(len(x)))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            _ = (loss_d.item(), loss_g.item())  # per-step logging, as usual
            done += 1
    return steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternate ours/reference this many times; report medians")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    results = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(), "batch": args.batch, "steps": args.steps, "cases": {}}
    for case, (model, channels, resolution) in CASES.items():
        cfg = config(model, args.batch)
        images = fake_dataset(4096, channels, resolution)
        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(ours(cfg, images, args.steps, args.warmup))
            theirs.append(reference(cfg, images, args.steps, args.warmup))
        mine.sort()
        theirs.sort()
        row = {"ours_img_s": mine[len(mine) // 2], "reference_img_s": theirs[len(theirs) // 2]}
        row["speedup"] = row["ours_img_s"] / row["reference_img_s"]
        results["cases"][case] = row
        print(f"{case}: ours {row['ours_img_s']:.0f} img/s, reference {row['reference_img_s']:.0f} img/s, "
              f"ratio {row['speedup']:.2f}x")
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
