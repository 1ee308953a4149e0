"""DiffAugment on every image D sees (pipeline.train.augment), with ADA-style adaptive probability:
p rises while D is surer of the real images than of the generated ones."""
from __future__ import annotations

from pipeline.train.augment import AdaptiveProbability, diff_augment
from pipeline.train.terms.base import DStep, Term, TrainingContext


class Augmentation(Term):
    def __init__(self, settings, device):
        self.settings = settings
        self.p = AdaptiveProbability(settings.p, settings.adaptive_step, settings.p_max, device)

    @classmethod
    def from_config(cls, context: TrainingContext) -> Augmentation | None:
        return cls(context.cfg.augment, context.device) if context.cfg.augment else None

    def d_input(self, images):
        return diff_augment(images, self.settings.ops, self.p.p, self.settings.cutout_ratio)

    def after_d_update(self, step: DStep) -> None:
        if self.settings.adaptive:
            self.p.update(-step.real_logits.detach().mean(), step.fake_logits.detach().mean())

    def epoch_stats(self) -> dict:
        return {"augment_p": float(self.p.p)}

    def state(self) -> float:
        return float(self.p.p)

    def load_state(self, state: float) -> None:
        self.p.p.fill_(state)
