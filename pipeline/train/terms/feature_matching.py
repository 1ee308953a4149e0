"""Improved-GAN feature matching: G matches the batch mean of D's features at `layer` on real
images (optionally besides the adversarial loss, and with a pixel-mean term)."""
from __future__ import annotations

import torch

from pipeline.train.terms.base import GStep, Term, TrainingContext


class FeatureMatching(Term):
    stats = ("fm_loss",)

    def __init__(self, settings):
        self.settings = settings

    @classmethod
    def from_config(cls, context: TrainingContext) -> FeatureMatching | None:
        return cls(context.cfg.feature_matching) if context.cfg.feature_matching is not None else None

    def g_loss(self, step: GStep) -> dict:
        fm = self.settings
        with torch.no_grad():
            real_feats = step.d(step.d_input(step.real), None).features[fm.layer].float().flatten(1)
        fake_feats = step.gen_out.features[fm.layer].float().flatten(1)
        terms = {"fm_loss": fm.weight * (real_feats.mean(0) - fake_feats.mean(0)).pow(2).sum()}
        step.stats["fm_loss"] = terms["fm_loss"].detach()
        if fm.pixel_weight:
            terms["pixel_loss"] = fm.pixel_weight * (step.real.mean(0) - step.fake.float().mean(0)).pow(2).mean()
        return terms
