"""ACGAN's auxiliary classifier: D's class cross-entropy on real and on generated images joins D's
loss, the generated images' joins G's. cls_ratio (fake over real class loss) is the write-up's
diagnostic of how much harder generated images are to classify."""
from __future__ import annotations

import torch.nn.functional as F

from pipeline.train.terms.base import DStep, GStep, Term, TrainingContext


class ClassHead(Term):
    stats = ("cls_real", "cls_fake")

    @classmethod
    def from_config(cls, context: TrainingContext) -> ClassHead | None:
        return cls() if context.family.class_head else None

    def d_loss(self, step: DStep, loss):
        step.stats["cls_real"] = F.cross_entropy(step.real_out.class_logits.float(), step.labels)
        step.stats["cls_fake"] = F.cross_entropy(step.fake_out.class_logits.float(), step.fake_labels)
        return loss + step.stats["cls_real"] + step.stats["cls_fake"]

    def g_loss(self, step: GStep) -> dict:
        return {"loss_cls": F.cross_entropy(step.gen_out.class_logits.float(), step.fake_labels)}

    def derived_stats(self, row: dict) -> dict:
        return {"cls_ratio": row["cls_fake"] / max(row["cls_real"], 1e-12)}
