"""What cGAN and ACGAN share: the networks of the Kuzushiji write-up (seed 000; the InfoGAN-style 28 px pair).

G (both): [z, one-hot(y)] -> fc 1024 -> BN, ReLU -> fc 128 * (R/4)^2 -> BN, ReLU
          -> ConvT 128 -> 64 (4x4, stride 2) -> BN, ReLU -> ConvT 64 -> C (4x4, stride 2) -> tanh.
          (The write-up's listing shows only D; G is the usual pair for it, see docs/deviations.md.)
Trunk (both Ds), as the write-up's listing: conv C' -> 64 (4x4, stride 2), LeakyReLU 0.2
          -> conv 64 -> 128 (4x4, stride 2), LeakyReLU, BatchNorm2d
          -> fc 128 * (R/4)^2 -> 1024, BatchNorm1d, LeakyReLU.
          The two blocks order BatchNorm differently; `d_conv_order` / `d_fc_order` set each
          (`act_bn` or `bn_act`), `d_norm: none` drops BatchNorm from D.
ACGAN D: the image only (C' = C); two heads on the trunk: real/fake logit and K class logits
          (the listing's Sigmoid and LogSoftmax live in the losses, which take logits).
cGAN D: the image with one constant plane per class appended (C' = C + K, the one-hot label
          broadcast over the image), one real/fake logit.
The two Ds are pipeline/nets/cgan.py and acgan.py (their own modules, so editing one family's
net re-runs only its experiments).
Any resolution divisible by 4 (28 for Kuzushiji); the widths are `model_args`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.common import init_weights
from pipeline.nets.options import ConditionalOptions as Options


class Generator(nn.Module):
    def __init__(self, z_dim: int, channels: int, resolution: int, num_classes: int, opts: Options):
        super().__init__()
        self.num_classes, self.side, self.width = num_classes, resolution // 4, opts.g_width
        self.fc = nn.Sequential(
            nn.Linear(z_dim + num_classes, opts.fc_width), nn.BatchNorm1d(opts.fc_width), nn.ReLU(True),
            nn.Linear(opts.fc_width, opts.g_width * self.side**2), nn.BatchNorm1d(opts.g_width * self.side**2), nn.ReLU(True),
        )
        half = opts.g_width // 2
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(opts.g_width, half, 4, 2, 1), nn.BatchNorm2d(half), nn.ReLU(True),
            nn.ConvTranspose2d(half, channels, 4, 2, 1), nn.Tanh(),
        )
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        h = self.fc(torch.cat([z, onehot], 1)).view(-1, self.width, self.side, self.side)
        return self.deconv(h)


class Trunk(nn.Module):
    def __init__(self, in_channels: int, resolution: int, opts: Options):
        super().__init__()
        side, w = resolution // 4, opts.d_width

        def norm_act(norm: nn.Module, order: str) -> list[nn.Module]:
            act = nn.LeakyReLU(0.2, True)
            if opts.d_norm == "none":
                return [act]
            return [act, norm] if order == "act_bn" else [norm, act]

        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), *norm_act(nn.BatchNorm2d(2 * w), opts.d_conv_order),
            nn.Flatten(),
            nn.Linear(2 * w * side**2, opts.fc_width), *norm_act(nn.BatchNorm1d(opts.fc_width), opts.d_fc_order),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
