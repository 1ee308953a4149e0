"""Each family's `model_args` schema and shape check: pure data, no torch.

Validating params.yaml (every stage, `aggregate` included) reads these; importing torch for it
would cost every stage ~1.5 s. The networks themselves (pipeline/nets/<family>.py) import their
Options from here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.core.schema import StrictModel


# ----- mlp: the MNIST write-up's fully connected pair --------------------------------------------
class MlpOptions(StrictModel):
    g_hidden: tuple[int, ...] = (256, 512, 1024)
    d_hidden: tuple[int, ...] = (1024, 512, 256)
    dropout: float = Field(default=0.5, ge=0, lt=1)  # G: before the output layer (the write-up's)
    bn_after_activation: bool = True  # the write-up's G: LeakyReLU then BatchNorm
    d_dropout: float = Field(default=0.0, ge=0, lt=1)  # D: after each LeakyReLU (Goodfellow et al.'s MNIST D)


def mlp_shape(channels: int, resolution: int) -> str | None:
    return None  # fully connected: any image size works


# ----- dcgan ---------------------------------------------------------------------------------------
class DcganOptions(StrictModel):
    ngf: int = 64
    ndf: int = 64
    d_norm: Literal["batch", "layer", "none"] = "batch"
    minibatch_b: int = Field(default=0, ge=0)  # minibatch discrimination: B kernels (0: off)
    minibatch_c: int = Field(default=5, ge=1)  # ... of C dimensions each
    head: Literal["adversarial", "k_plus_1"] = "adversarial"


def base_and_depth(resolution: int) -> tuple[int, int] | None:
    """Largest k with resolution = b * 2**k, b >= 4; None unless b <= 7 and k >= 2."""
    k = 0
    while resolution % 2 ** (k + 1) == 0 and resolution // 2 ** (k + 1) >= 4:
        k += 1
    base = resolution // 2**k
    return (base, k) if k >= 2 and base <= 7 else None


def dcgan_shape(channels: int, resolution: int) -> str | None:
    if base_and_depth(resolution) is None:
        return "dcgan needs resolution = b * 2**k with 4 <= b <= 7 and k >= 2 (e.g. 28, 32, 48, 64)"
    return None


def minibatch_bytes(batch_size: int, b: int, c: int) -> int:
    """Memory of the pairwise-difference tensor of minibatch discrimination (float32, with its gradient)."""
    return 2 * 4 * batch_size**2 * b * c


# ----- cgan / acgan: the Kuzushiji write-up's networks ---------------------------------------------
BlockOrder = Literal["act_bn", "bn_act"]  # LeakyReLU then BatchNorm, or BatchNorm then LeakyReLU


class ConditionalOptions(StrictModel):
    g_width: int = 128  # channels of G's first feature map (then half of it)
    d_width: int = 64  # channels of D's first conv (then twice it)
    fc_width: int = 1024
    d_conv_order: BlockOrder = "act_bn"  # the write-up's second conv block: LeakyReLU, then BatchNorm2d
    d_fc_order: BlockOrder = "bn_act"  # the write-up's fc block: Linear, BatchNorm1d, then LeakyReLU
    d_norm: Literal["batch", "none"] = "batch"  # none: D without BatchNorm (see the MNIST controls)


def conditional_shape(channels: int, resolution: int) -> str | None:
    if resolution % 4 or resolution < 8:
        return "cgan / acgan need a resolution divisible by 4 (two stride-2 layers), at least 8"
    return None


# ----- projected: ProjectedGAN with a FastGAN-lite generator -------------------------------------
PROJECTED_RESOLUTIONS = (64, 128, 256)


class ProjectedOptions(StrictModel):
    ngf: int = 64  # FastGAN width multiplier
    ndf: int | None = None  # None: the official widths (to 512); an int: every D block this wide (lighter)
    backbone: Literal["lite0", "lite1"] = "lite0"
    proj_type: Literal[0, 1, 2] = 2
    proj_channels: int = 64  # CCM output channels at the finest scale (doubled per coarser scale)


def projected_shape(channels: int, resolution: int) -> str | None:
    if resolution not in PROJECTED_RESOLUTIONS:
        return f"projected (FastGAN generator) makes {', '.join(map(str, PROJECTED_RESOLUTIONS))} px images"
    return None
