"""Differentiable augmentation (Zhao et al. 2020, DiffAugment) applied to real and generated
images before D, and the adaptive probability that steers D's real and fake losses together.

Each op is applied to each image with probability p (1.0: always, as in DiffAugment); every
op is differentiable in the image, so G's gradient flows through it. Images are in [-1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OPS = ("color", "translation", "cutout")


def _where(mask: torch.Tensor, augmented: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), augmented, x)


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5), per image."""
    n = len(x)
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio x size pixels, zero padding (differentiable gather)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + 1
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + 1
    padded = F.pad(x, [1, 1, 1, 1])  # out-of-range indices land on the zero border
    rows, cols = rows.clamp(0, h + 1).expand(n, h, w), cols.clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ratio x size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, ops: list[str] | tuple[str, ...], p: float | torch.Tensor = 1.0,
                 cutout_ratio: float = 0.5) -> torch.Tensor:
    """Apply each op in order, to each image with probability p; cutout squares of cutout_ratio
    x the side (0.5 in DiffAugment, 0.2 in the official ProjectedGAN)."""
    for op in ops:
        augmented = cutout(x, cutout_ratio) if op == "cutout" else _FUNCS[op](x)
        if isinstance(p, float) and p >= 1.0:
            x = augmented
        else:
            x = _where(torch.rand(len(x), device=x.device) < p, augmented, x)
    return x


class AdaptiveProbability:
    """p rises when D finds the real images easier than the generated ones (its real loss below
    its fake loss: it starts to memorise the few real images) and falls otherwise, by `step`
    per update, within [0, p_max]. Kept on the device: no host sync."""

    def __init__(self, p: float, step: float, p_max: float, device):
        self.p = torch.tensor(float(p), device=device)
        self.step, self.p_max = step, p_max

    def update(self, real_loss: torch.Tensor, fake_loss: torch.Tensor) -> None:
        direction = torch.sign(fake_loss.detach() - real_loss.detach())
        self.p = (self.p + self.step * direction).clamp(0.0, self.p_max)
