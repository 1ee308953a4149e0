"""DCGAN (Radford et al. 2015) for any resolution b * 2**k with 4 <= b <= 7 and k >= 2
(28, 32, 48, 64, 96, 128 ...), 1 or 3 channels.

G: z -> ConvTranspose(b x b) -> k stride-2 ConvTranspose layers halving the width each time,
BatchNorm + ReLU between, tanh out. D mirrors it: stride-2 convs with LeakyReLU(0.2), batch
norm on all but the first, and a final b x b conv to one logit. Weights N(0, 0.02) as in the paper.
`d_norm: layer` swaps D's batch norm for layer norm (GroupNorm with one group), as WGAN-GP
needs; `none` drops it.

Improved-GAN options (Salimans et al. 2016) on D: every block's output is returned as features
(feature matching picks one); `minibatch_b` > 0 adds minibatch discrimination before the last
layer; `head: k_plus_1` makes D a K-class classifier whose implicit (K+1)-th class is "generated":
its real/fake logit is logsumexp of the K class logits (D(x) = Z / (Z + 1), Z = sum exp(l_k)).
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.nets.common import DOut, init_weights
from pipeline.nets.options import DcganOptions as Options
from pipeline.nets.options import base_and_depth


class Generator(nn.Module):
    def __init__(self, z_dim: int, channels: int, resolution: int, ngf: int):
        super().__init__()
        base, depth = base_and_depth(resolution)
        width = ngf * 2 ** (depth - 1)
        layers = [nn.ConvTranspose2d(z_dim, width, base, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(depth - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z[:, :, None, None])


def d_norm_layer(kind: str, channels: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm2d(channels), "layer": lambda: nn.GroupNorm(1, channels),
            "none": nn.Identity}[kind]()


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016, sec. 3.2: M = f T (T: A x B x C); for each kernel b,
    o(x_i)_b = sum_j exp(-||M_ib - M_jb||_1) over the batch (j = i included, contributing 1);
    o is appended to f. Memory grows with batch^2 x B x C (the pairwise differences)."""

    def __init__(self, in_features: int, b: int, c: int):
        super().__init__()
        self.b, self.c = b, c
        self.T = nn.Parameter(torch.randn(in_features, b * c) * 0.1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).view(-1, self.b, self.c)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (N, N, B)
        return torch.cat([f, torch.exp(-l1).sum(1)], 1)


class Discriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, opts: Options, num_classes: int = 0):
        super().__init__()
        base, depth = base_and_depth(resolution)
        blocks = [nn.Sequential(nn.Conv2d(channels, opts.ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))]
        width = opts.ndf
        for _ in range(depth - 1):
            blocks.append(nn.Sequential(nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), d_norm_layer(opts.d_norm, width * 2),
                                        nn.LeakyReLU(0.2, True)))
            width *= 2
        self.blocks = nn.ModuleList(blocks)
        features = width * base * base
        self.minibatch = MinibatchDiscrimination(features, opts.minibatch_b, opts.minibatch_c) if opts.minibatch_b else None
        self.k_plus_1 = opts.head == "k_plus_1"
        # the paper's final b x b conv to one logit, as a linear layer on the flattened map (same function)
        self.head = nn.Linear(features + opts.minibatch_b, num_classes if self.k_plus_1 else 1, bias=False)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        h = x.flatten(1)
        if self.minibatch is not None:
            h = self.minibatch(h)
        out = self.head(h)
        if self.k_plus_1:
            return DOut(torch.logsumexp(out, 1), out, tuple(feats))
        return DOut(out.squeeze(1), None, tuple(feats))


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int = 0):
    return (
        Generator(z_dim, channels, resolution, opts.ngf),
        Discriminator(channels, resolution, opts, num_classes),
    )
