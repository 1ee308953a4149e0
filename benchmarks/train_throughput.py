"""Images/s of one G+D training step: ganlab's loop vs a textbook loop of the same nets, in fp32 and bf16.

Ours: Trainer.train_step (dataset resident as uint8, batches by index, D's parameters frozen
during G's step, channels_last, no host sync; fused Adam on CUDA) at `precision: fp32` and
`precision: bf16` (autocast). Reference: the textbook loop most GAN scripts are: a DataLoader
over a normalised float TensorDataset, BCE losses, `.item()` on both losses every step, in fp32,
and the same loop under bf16 autocast with channels_last. All run in the same process, same
threads, same nets and batch size; warm-up steps excluded; the variants alternate, medians
reported; `speedup` is ours at the precision `auto` picks on this machine over the fp32 textbook
loop, `speedup_bf16` ours in bf16 over it. bf16 is fast only where the CPU computes it natively
(AVX512-BF16 or AMX; `bf16_native` in the output); elsewhere oneDNN emulates it.

The 128 px cases (ProjectedGAN with its frozen EfficientNet projector and DiffAugment, and DCGAN
at the same size) are timed for ours only, once, at the precision `auto` picks: they are the
few-shot study's cost per step.

    python benchmarks/train_throughput.py            # writes benchmarks/results.json
    python benchmarks/train_throughput.py --cases dcgan-32   # re-measures one case, keeps the rest

Run it on an otherwise idle machine: on 2 cores a concurrent job halves or worse every figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.config import ExperimentConfig, MetricsConfig  # noqa: E402
from benchmarks.default_run import cpu_model  # noqa: E402
from pipeline.core.env import pick_device, pick_precision  # noqa: E402
from pipeline.train.checkpoint import Architecture  # noqa: E402
from pipeline.train.loop import Trainer  # noqa: E402
from pipeline.core.rundir import RunDir  # noqa: E402

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


def config(model: str, batch: int, device: str, extra: dict, precision: str = "fp32") -> ExperimentConfig:
    base = dict(study="bench", model=model, dataset="synthetic", loss="non_saturating", seed=0, epochs=1,
                batch_size=batch, lr_g=2e-4, lr_d=2e-4, z_dim=100, device=device, precision=precision)
    return ExperimentConfig(**{**base, **extra})


def fake_dataset(n: int, channels: int, resolution: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, resolution, resolution), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(cfg, images, steps: int, warmup: int) -> float:
    prepared = SimpleNamespace(images=images, labels=torch.zeros(len(images), dtype=torch.long), meta={},
                               test_images=None, test_labels=None)
    trainer = Trainer("bench", cfg, prepared, RunDir(Path("/nonexistent")), metrics_cfg=MetricsConfig())
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


def reference(cfg, images, steps: int, warmup: int, bf16: bool = False) -> float:
    """The textbook loop; `bf16`: under bf16 autocast, nets and batches channels_last."""
    device = pick_device(cfg.device)
    G, D = Architecture.of(cfg, images.shape[1], images.shape[2], 0).build(seed=cfg.seed)
    layout = torch.channels_last if bf16 else torch.contiguous_format
    G, D = G.to(device, memory_format=layout), D.to(device, memory_format=layout)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas_g)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d)
    bce = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(images.float() / 127.5 - 1), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for (x,) in loader:
            x = x.to(device, memory_format=layout)
            if done == warmup:
                start = time.perf_counter()
            if done == warmup + steps:
                break
            ones, zeros = torch.ones(len(x), device=device), torch.zeros(len(x), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                fake = G(torch.randn(len(x), cfg.z_dim, device=device))
                loss_d = bce(D(x).logits.float(), ones) + bce(D(fake.detach()).logits.float(), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss_g = bce(D(fake).logits.float(), ones)
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
    parser.add_argument("--repeats", type=int, default=3, help="alternate the variants this many times; report medians")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    device = pick_device(args.device)
    auto = pick_precision("auto", device)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    run = {"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps,
           "cpu": cpu_model(), "bf16_native": pick_precision("auto", torch.device("cpu")) == "bf16",
           "auto_precision": auto, "date": time.strftime("%Y-%m-%d"),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cases": {}}
    for case in args.cases:
        model, channels, resolution, batch, extra, compare = CASES[case]
        images = fake_dataset(max(1024, 8 * batch), channels, resolution)
        steps = args.steps if resolution <= 32 else max(5, args.steps // 6)
        warmup = args.warmup if resolution <= 32 else 2
        timed = {"ours_fp32": [], "ours_bf16": [], "textbook_fp32": [], "textbook_bf16_cl": []}
        # the 128 px cases (seconds per step) run at the precision `auto` picks only
        precisions = ("fp32", "bf16") if compare else (auto,)
        for _ in range(args.repeats if compare else 1):
            for precision in precisions:
                timed[f"ours_{precision}"].append(ours(config(model, batch, args.device, extra, precision), images,
                                                       steps, warmup))
            if compare:
                cfg = config(model, batch, args.device, extra)
                timed["textbook_fp32"].append(reference(cfg, images, steps, warmup))
                timed["textbook_bf16_cl"].append(reference(cfg, images, steps, warmup, bf16=True))
        row = {"batch": batch, **{f"{k}_img_s": median(v) for k, v in timed.items() if v}}
        row["ours_auto_img_s"] = row[f"ours_{auto}_img_s"]
        if compare:
            row["speedup"] = row["ours_auto_img_s"] / row["textbook_fp32_img_s"]
            row["speedup_bf16"] = row["ours_bf16_img_s"] / row["textbook_fp32_img_s"]
        run["cases"][case] = row
        print(f"{case} (batch {batch}): " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "batch"), flush=True)
    earlier = results.get(device.type, {}).get("cases", {})
    run["cases"] = {**earlier, **run["cases"]}  # --cases re-measures those and keeps the others
    results[device.type] = run
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
