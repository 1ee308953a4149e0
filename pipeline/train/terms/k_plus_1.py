"""Improved-GAN's semi-supervised K+1 discriminator: D's class head also learns from a few labelled
real images (`labeled_per_class`); its unsupervised GAN loss is weighted by `unlabelled_weight`.
The final checkpoint carries the supervised-only baseline it must beat: D's network trained on
the labelled images alone, with the same init, optimiser and number of D updates."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core import progress
from pipeline.train.terms.base import DStep, Term, TrainingContext


def labelled_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` images of every class (fewer where a class has fewer), drawn by seed."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for k in labels[labels >= 0].unique().tolist():
        members = (labels == k).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


class KPlus1(Term):
    stats = ("sup_ce", "loss_unl")

    def __init__(self, context: TrainingContext):
        cfg, self.device = context.cfg, context.device
        self.cfg = cfg  # the baseline's optimiser, batch size and seed
        self.images, self.labels, self.inputs = context.images, context.labels, context.inputs
        self.labelled_idx = labelled_subset(context.labels.cpu(), cfg.labeled_per_class, cfg.seed).to(self.device)
        self.unlabelled_weight = cfg.unlabelled_weight

    @classmethod
    def from_config(cls, context: TrainingContext) -> KPlus1 | None:
        return cls(context) if getattr(context.options, "head", None) == "k_plus_1" else None

    def d_loss(self, step: DStep, loss):
        idx = self.labelled_idx
        pick = idx[step.draw(lambda n: torch.randint(0, len(idx), (n,), device=idx.device), len(step.real))]
        out = step.d(self.inputs(self.images[pick]), self.labels[pick])
        step.stats["sup_ce"] = F.cross_entropy(out.class_logits.float(), self.labels[pick])
        step.stats["loss_unl"] = loss
        return step.stats["sup_ce"] + self.unlabelled_weight * loss

    def checkpoint_extras(self, *, fresh_d, d_updates, autocast) -> dict:
        return {"D_supervised": self.supervised_baseline(fresh_d(), d_updates, autocast),
                "labelled_images": len(self.labelled_idx)}

    def supervised_baseline(self, D: torch.nn.Module, d_updates: int, autocast) -> dict:
        """`D` trained on the labelled images alone (cross-entropy), `d_updates` updates (as many as D had)."""
        cfg, device = self.cfg, self.device
        D = D.to(device, memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas_d)
        gen = torch.Generator(device=device).manual_seed(cfg.seed + 5)
        for _ in progress.bar(range(d_updates), desc="K+1 supervised baseline"):
            pick = self.labelled_idx[torch.randint(0, len(self.labelled_idx), (cfg.batch_size,),
                                                   device=device, generator=gen)]
            with autocast():
                loss = F.cross_entropy(D(self.inputs(self.images[pick])).class_logits.float(), self.labels[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return D.state_dict()
