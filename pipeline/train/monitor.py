"""What training watches every epoch, apart from its losses: sample grids from fixed inputs, and
cheap IS / FID (plus class coverage and conditional accuracy with the dataset classifier) on a
fixed set of real images. fid_cheap picks the best checkpoint; the final evaluation uses more
samples (pipeline.evaluate.run)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision.utils as vutils

from pipeline import nets
from pipeline.core.config import ExperimentConfig, MetricsConfig
from pipeline.data.prepare import Prepared
from pipeline.core.errors import ExtractorUnavailable
from pipeline.core.layout import GRID_COLUMNS, GRID_MAX_ROWS
from pipeline.evaluate.classifier import class_report, load_dataset_classifier
from pipeline.evaluate.metrics import compute_metrics  # at start-up, not in the first epoch's timing
from pipeline.nets.sampling import balanced_labels, generate, labels_like, sample_z

GRID_SIZE = 64  # unconditional sample grid: 8 x 8


class EpochMonitor:
    def __init__(self, name: str, cfg: ExperimentConfig, prepared: Prepared, images: torch.Tensor,
                 labels: torch.Tensor, *, metrics_cfg: MetricsConfig, classifier_path: Path | None, device):
        self.cfg, self.metrics_cfg, self.device = cfg, metrics_cfg, device
        self.conditional = nets.FAMILIES[cfg.model].conditional
        self.num_classes = len(prepared.meta.get("classes", []))
        # the fixed real reference: held-out images where the dataset has them (so the best checkpoint is
        # not chosen on the images the final metrics compare with), else training images
        held_out = prepared.test_images is not None and len(prepared.test_images) >= 2
        reference, reference_labels = (prepared.test_images, prepared.test_labels) if held_out else (images, labels)
        pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(1))[: cfg.eval_samples]
        self.real, self.real_labels = reference[pick], reference_labels[pick]
        self.reference = "held-out" if held_out else "training"
        self.classifier_path, self.classifier = classifier_path, self._load_classifier(name, classifier_path)
        self.grid_z, self.grid_y = self._grid_inputs()

    def _load_classifier(self, name: str, path: Path | None):
        """The dataset classifier, when the cheap metrics use it or a conditional model can be
        scored with it (None otherwise); a cheap extractor `classifier` without one is an error now."""

        model, _ = load_dataset_classifier(path, self.device)
        if model is None and self.cfg.cheap_extractor == "classifier":
            raise ExtractorUnavailable(
                f"{name}: cheap_extractor classifier needs the dataset classifier ({path}): run "
                f"`dvc repro classifier@{self.cfg.dataset}` first, or use cheap_extractor: effnet")
        return model

    def _grid_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fixed latents (and labels) of the grids: 8 x 8 samples, or for a conditional model one row
        per class (in class order) with the same 8 latents in every row."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        if not self.conditional:
            return sample_z(GRID_SIZE, self.cfg, device="cpu", generator=gen).to(self.device), None
        rows = min(self.num_classes, GRID_MAX_ROWS)
        z = sample_z(GRID_COLUMNS, self.cfg, device="cpu", generator=gen).repeat(rows, 1)
        y = torch.arange(rows).repeat_interleave(GRID_COLUMNS)
        return z.to(self.device), y.to(self.device)

    def save_grid(self, G: torch.nn.Module, path: Path) -> None:
        was_training = G.training
        G.eval()
        with torch.no_grad():
            grid = G(self.grid_z, self.grid_y).float().cpu()
        G.train(was_training)
        nrow = GRID_COLUMNS if self.conditional else int(math.sqrt(GRID_SIZE))
        vutils.save_image(grid, path, nrow=nrow, normalize=True, value_range=(-1, 1))

    def metrics(self, G: torch.nn.Module) -> dict:
        """fid_cheap, is_cheap; with the classifier classes_covered_cheap, confidence_cheap and a
        conditional model's cond_acc_cheap."""

        cfg, n = self.cfg, len(self.real)
        labels = labels_like(self.real_labels, n, cfg.seed + 2) if self.conditional else None
        fake = generate(G, n, cfg, seed=cfg.seed + 2, device=self.device, labels=labels)
        ext = cfg.cheap_extractor
        values, skipped = compute_metrics(
            fake, self.real, extractors=[ext], cache_dir=Path(self.metrics_cfg.cache_dir),
            inception_weights=self.metrics_cfg.inception_weights, classifier_weights=self.classifier_path, kid=False,
            batch_size=self.metrics_cfg.batch_size, device=self.device,
        )
        if skipped:
            raise RuntimeError(f"cheap metric extractor '{ext}' unavailable: {skipped[ext]}")
        row = {"fid_cheap": values[f"fid_{ext}"], "is_cheap": values[f"is_{ext}"]}
        if self.classifier is not None:
            requested = None
            if self.conditional:
                requested = balanced_labels(n, self.num_classes)
                fake = generate(G, n, cfg, seed=cfg.seed + 4, device=self.device, labels=requested)
            report = class_report(self.classifier, fake, requested, self.num_classes)
            row.update(classes_covered_cheap=report["classes_covered"], confidence_cheap=report["confidence"])
            if requested is not None:
                row["cond_acc_cheap"] = report["cond_acc"]
        return row
