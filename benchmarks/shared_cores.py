"""Two trainings on one machine: images/s of each and together, with and without ganlab's core
sharing (pipeline.core.cores), against one training alone.

Each training is its own process running ganlab's DCGAN-32 training step (Trainer.train_step, as
benchmarks/train_throughput.py times it) for a fixed wall time, at the precision `auto` picks:
* alone: one training, taking its share (every core);
* two, torch's default: both at once, each taking every core (what a second `dvc repro`, a test
  run beside a study or a sweep's parallel runs did before the stages shared the cores);
* two, shared: both at once, each registering as a stage and re-taking its share every second
  (what a stage does: `share_cores` at its start, the training's CoreShare callback after).
The second training starts a second after the first, as a real one would. Writes the
`shared_cores` entry of benchmarks/results.json. Run it on an otherwise idle machine:

    python benchmarks/shared_cores.py              # ~2 min
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(seconds: float, share: bool) -> None:
    """One training for `seconds` of wall time after warm-up; prints its images/s as JSON."""
    sys.path.insert(0, str(ROOT))
    from pipeline.core import cores

    if share:
        cores.share_cores()
    import torch

    from benchmarks.train_throughput import config, fake_dataset
    from pipeline.core.config import MetricsConfig
    from pipeline.core.rundir import RunDir
    from pipeline.train.loop import Trainer
    from types import SimpleNamespace

    cfg = config("dcgan", 64, "cpu", {}, precision="auto")
    images = fake_dataset(2048, 3, 32)
    prepared = SimpleNamespace(images=images, labels=torch.zeros(len(images), dtype=torch.long), meta={},
                               test_images=None, test_labels=None)
    trainer = Trainer("bench", cfg, prepared, RunDir(Path("/nonexistent")), metrics_cfg=MetricsConfig())
    order, b = torch.randperm(len(images)), cfg.batch_size
    for i in range(5):  # warm-up
        trainer.train_step(trainer.images[order[:b]], trainer.labels[order[:b]])
    steps, start, checked = 0, time.perf_counter(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        idx = order[(steps * b) % (len(images) - b):][:b]
        trainer.train_step(trainer.images[idx], trainer.labels[idx])
        steps += 1
        if share and time.perf_counter() - checked > 1.0:
            cores.rebalance()
            checked = time.perf_counter()
    elapsed = time.perf_counter() - start
    print(json.dumps({"img_s": steps * b / elapsed, "threads": torch.get_num_threads()}))
    if share:
        cores.unregister()


def bf16_flags() -> list[str]:
    """The CPU flags that decide bf16 speed (lscpu's flags: a VM may move between hosts)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def trainings(n: int, seconds: float, share: bool) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen([sys.executable, __file__, "--child", str(seconds), "--share", str(int(share))],
                                      stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT))
        time.sleep(1.0)
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time each training is timed for")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child, bool(args.share))
    sys.path.insert(0, str(ROOT))
    from benchmarks.default_run import cpu_model

    alone = trainings(1, args.seconds, share=True)
    default = trainings(2, args.seconds, share=False)
    shared = trainings(2, args.seconds, share=True)
    entry = {
        "cpu": cpu_model(), "cpu_flags": bf16_flags(), "cores": os.cpu_count(), "case": "dcgan-32, batch 64, precision auto",
        "seconds_each": args.seconds,
        "alone_img_s": alone[0]["img_s"],
        "two_default_img_s": [r["img_s"] for r in default], "two_default_threads": [r["threads"] for r in default],
        "two_shared_img_s": [r["img_s"] for r in shared], "two_shared_threads": [r["threads"] for r in shared],
    }
    entry["two_default_total_over_alone"] = sum(entry["two_default_img_s"]) / entry["alone_img_s"]
    entry["two_shared_total_over_alone"] = sum(entry["two_shared_img_s"]) / entry["alone_img_s"]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["shared_cores"] = entry
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
