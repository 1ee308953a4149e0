"""The adversarial loss of D and G (pipeline.train.losses), with the write-up's label noise: D's targets
drawn from U(real) / U(fake) instead of 1 / 0 when `label_noise` is set."""
from __future__ import annotations

from pipeline.train.terms.base import DStep, GStep, Term, TrainingContext


class Adversarial(Term):
    def __init__(self, loss, label_noise, for_g: bool):
        self.loss, self.label_noise, self.for_g = loss, label_noise, for_g

    @classmethod
    def from_config(cls, context: TrainingContext) -> Adversarial:
        fm = context.cfg.feature_matching  # feature matching may replace G's adversarial loss
        return cls(context.loss, context.cfg.label_noise, for_g=fm is None or fm.adversarial)

    def d_loss(self, step: DStep, loss):
        real, fake = step.real_logits, step.fake_logits
        noise = self.label_noise
        if noise is None:
            return self.loss.d_loss(real, fake)
        real_target = step.draw(lambda n: real.new_empty((n, *real.shape[1:])).uniform_(*noise.real), len(real))
        fake_target = step.draw(lambda n: fake.new_empty((n, *fake.shape[1:])).uniform_(*noise.fake), len(fake))
        return self.loss.d_loss(real, fake, real_target, fake_target)

    def g_loss(self, step: GStep) -> dict:
        return {"loss_adv": self.loss.g_loss(step.gen_out.logits.float())} if self.for_g else {}
