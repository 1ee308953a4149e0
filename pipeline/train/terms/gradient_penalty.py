"""WGAN-GP's gradient penalty on D, for the losses that declare a weight for it."""
from __future__ import annotations

from pipeline.train import losses
from pipeline.train.terms.base import DStep, Term, TrainingContext


class GradientPenalty(Term):
    def __init__(self, weight: float, loss_name: str):
        self.weight = weight
        self.not_distributable = f"loss {loss_name} needs a gradient penalty (double backward), which DDP does not support"

    @classmethod
    def from_config(cls, context: TrainingContext) -> GradientPenalty | None:
        return cls(context.loss.gp_weight, context.cfg.loss) if context.loss.gp_weight else None

    def d_loss(self, step: DStep, loss):
        # on the un-augmented images, as the penalty's definition has it
        penalty = losses.gradient_penalty(lambda v: step.d(v, step.labels).logits.float(), step.real, step.fake)
        return loss + self.weight * penalty
