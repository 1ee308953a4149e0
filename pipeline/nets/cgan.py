"""cGAN: the conditional G and a D that sees the label as one constant plane per class
(its G and the D trunk are pipeline/nets/conditional.py's, shared with the other conditional family)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.common import DOut, init_weights
from pipeline.nets.conditional import Generator, Options, Trunk


class CGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, num_classes: int, opts: Options):
        super().__init__()
        self.num_classes = num_classes
        self.trunk = Trunk(channels + num_classes, resolution, opts)
        self.adv = nn.Linear(opts.fc_width, 1)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        planes = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        return DOut(self.adv(self.trunk(torch.cat([x, planes], 1))).squeeze(1))


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int):
    return (Generator(z_dim, channels, resolution, num_classes, opts),
            CGANDiscriminator(channels, resolution, num_classes, opts))
