"""Final metrics of one trained experiment: IS / FID / KID of the last and the best checkpoint."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pipeline.config import ExperimentConfig, MetricsConfig
from pipeline.data import Prepared
from pipeline.metrics import compute_metrics
from pipeline.sampling import generate
from pipeline.train import RunPaths, load_generator, pick_device


def real_reference(prepared: Prepared, n_real: int | None) -> torch.Tensor:
    """The real images metrics compare against: the training split, a fixed subset if capped."""
    images = prepared.images
    if n_real is not None and n_real < len(images):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n_real]
        images = images[pick.sort().values]
    return images


def evaluate_run(cfg: ExperimentConfig, prepared: Prepared, run_dir: Path, metrics_cfg: MetricsConfig,
                 *, dataset_key: str) -> tuple[dict, dict]:
    """Returns (metrics, skipped extractors -> reason). Unprefixed keys are the final checkpoint's,
    `best_`-prefixed ones the best checkpoint's (lowest cheap FID during training)."""
    paths = RunPaths(run_dir)
    summary = json.loads(paths.summary.read_text())
    device = pick_device(cfg.device)
    real = real_reference(prepared, cfg.n_real)
    results = {"n_fake": cfg.n_fake, "n_real": len(real), "best_epoch": summary["best_epoch"],
               "epochs": summary["epochs"]}
    skipped: dict[str, str] = {}
    checkpoints = [("", paths.checkpoints / "last.pt"), ("best_", paths.checkpoints / "best.pt")]
    final_values = None
    for prefix, checkpoint in checkpoints:
        if prefix and summary["best_epoch"] == summary["epochs"] and final_values is not None:
            values = final_values  # the best checkpoint is the final one
        else:
            G, _, _ = load_generator(checkpoint, device)
            fake = generate(G, cfg.n_fake, z_dim=cfg.z_dim, z_dist=cfg.z_dist, seed=cfg.seed + 3, device=device)
            values, missing = compute_metrics(
                fake, real, extractors=metrics_cfg.extractors, real_cache_key=f"{dataset_key}-n{len(real)}",
                cache_dir=Path(metrics_cfg.cache_dir), inception_weights=metrics_cfg.inception_weights,
                kid_subset_size=metrics_cfg.kid_subset_size, batch_size=metrics_cfg.batch_size, device=device,
            )
            skipped.update(missing)
        final_values = final_values or values
        results.update({prefix + k: v for k, v in values.items()})
    return results, skipped


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)
