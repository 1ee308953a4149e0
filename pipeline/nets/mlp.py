"""The MNIST MLP GAN of the first write-up.

G: z -> 256 -> 512 -> 1024 -> C*H*W, each hidden layer Linear -> LeakyReLU(0.2) -> BatchNorm (the
write-up's order; `bn_after_activation: false` gives the usual Linear -> BatchNorm -> LeakyReLU),
dropout 0.5 before the output layer, tanh. D: C*H*W -> 1024 -> 512 -> 256 -> 1 with
LeakyReLU(0.2) and no batch norm; `d_dropout` adds dropout after each LeakyReLU, as the original
GAN paper's MNIST D had (on 8,000 images a D without it overfits and G drops digit classes). The write-up pairs it with z ~ U(-1, 1) and Adam 2e-4 with
beta1 0.5 for G and 0.1 for D (set in params.yaml, not hidden here).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.nets.common import DOut
from pipeline.nets.options import MlpOptions as Options


class Generator(nn.Module):
    def __init__(self, z_dim: int, out_shape: tuple[int, int, int], hidden, dropout: float,
                 bn_after_activation: bool = True):
        super().__init__()
        layers, width = [], z_dim
        for h in hidden:
            norm_act = [nn.LeakyReLU(0.2), nn.BatchNorm1d(h)] if bn_after_activation else [nn.BatchNorm1d(h), nn.LeakyReLU(0.2)]
            layers += [nn.Linear(width, h), *norm_act]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, math.prod(out_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.out_shape = out_shape

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, *self.out_shape)


class Discriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], hidden, dropout: float = 0.0):
        super().__init__()
        layers, width = [], math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return DOut(self.net(x.flatten(1)).squeeze(1))


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int = 0):
    shape = (channels, resolution, resolution)
    return (Generator(z_dim, shape, opts.g_hidden, opts.dropout, opts.bn_after_activation),
            Discriminator(shape, opts.d_hidden, opts.d_dropout))
