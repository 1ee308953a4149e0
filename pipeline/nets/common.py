"""Pieces every family shares."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class DOut(NamedTuple):
    """What a discriminator returns: real/fake logits, and class logits where it has a class head."""

    logits: torch.Tensor  # (N,) real/fake logits (ProjectedGAN: N x 64, one per scale position)
    class_logits: torch.Tensor | None = None  # (N, K): ACGAN's auxiliary classifier, K+1 D's class logits
    features: tuple[torch.Tensor, ...] = ()  # intermediate activations, for feature matching


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.): N(0, 0.02) weights, BatchNorm scale N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
