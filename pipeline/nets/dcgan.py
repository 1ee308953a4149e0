"""DCGAN (Radford et al. 2015) for any resolution b * 2**k with 4 <= b <= 7 and k >= 2
(28, 32, 48, 64, 96, 128 ...), 1 or 3 channels.

G: z -> ConvTranspose(b x b) -> k stride-2 ConvTranspose layers halving the width each time,
BatchNorm + ReLU between, tanh out. D mirrors it: stride-2 convs with LeakyReLU(0.2), batch
norm on all but the first, and a final b x b conv to one logit. Weights N(0, 0.02) as in the paper.
`d_norm: layer` swaps D's batch norm for layer norm (GroupNorm with one group), as WGAN-GP
needs; `none` drops it.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.nets.common import DOut, init_weights
from pipeline.schema import StrictModel


class Options(StrictModel):
    ngf: int = 64
    ndf: int = 64
    d_norm: Literal["batch", "layer", "none"] = "batch"


def base_and_depth(resolution: int) -> tuple[int, int] | None:
    """Largest k with resolution = b * 2**k, b >= 4; None unless b <= 7 and k >= 2."""
    k = 0
    while resolution % 2 ** (k + 1) == 0 and resolution // 2 ** (k + 1) >= 4:
        k += 1
    base = resolution // 2**k
    return (base, k) if k >= 2 and base <= 7 else None


def check_shape(channels: int, resolution: int) -> str | None:
    if base_and_depth(resolution) is None:
        return "dcgan needs resolution = b * 2**k with 4 <= b <= 7 and k >= 2 (e.g. 28, 32, 48, 64)"
    return None


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


class Discriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, ndf: int, norm: str = "batch"):
        super().__init__()
        base, depth = base_and_depth(resolution)
        layers = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), d_norm_layer(norm, width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, base, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return DOut(self.net(x).flatten())


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int = 0):
    return (
        Generator(z_dim, channels, resolution, opts.ngf),
        Discriminator(channels, resolution, opts.ndf, opts.d_norm),
    )
