"""ACGAN: the conditional G and a D with a real/fake head and a class head on the trunk
(its G and the D trunk are pipeline/nets/conditional.py's, shared with the other conditional family)."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.nets.common import DOut, init_weights
from pipeline.nets.conditional import Generator, Options, Trunk


class ACGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int, opts: Options):
        super().__init__()
        self.trunk = Trunk(channels, resolution, opts)
        self.adv = nn.Linear(opts.fc_width, 1)
        self.cls = nn.Linear(opts.fc_width, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        h = self.trunk(x)
        return DOut(self.adv(h).squeeze(1), self.cls(h))


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int):
    return (Generator(z_dim, channels, resolution, num_classes, opts),
            ACGANDiscriminator(channels, resolution, num_classes, opts))
