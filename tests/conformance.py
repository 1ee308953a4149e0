"""Helpers for the conformance tests: a network as the ordered list of layers it runs.

A write-up's listing is a sequence of layers; `layers_run(net, *inputs)` records the leaf modules
a forward pass calls, in the order it calls them (forward hooks, so a module defined early and
used late is listed where it runs), each described by the facts a listing states: type, sizes,
kernel / stride / padding, activation slope, dropout rate. The tests compare that list with
their transcription of the listing, layer by layer.
"""
from __future__ import annotations

import torch
from torch import nn


def describe(module: nn.Module) -> tuple:
    """The facts of one layer a listing states, as a tuple starting with its type name."""
    name = type(module).__name__
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return (name, module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                module.padding[0], module.bias is not None)
    if isinstance(module, nn.Linear):
        return (name, module.in_features, module.out_features, module.bias is not None)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return (name, module.num_features)
    if isinstance(module, nn.LeakyReLU):
        return (name, module.negative_slope)
    if isinstance(module, nn.Dropout):
        return (name, module.p)
    return (name,)


def layers_run(net: nn.Module, *inputs, sizes: bool = False) -> list[tuple]:
    """Every leaf module `net(*inputs)` calls, in call order, as `describe` tuples; with `sizes`,
    (describe, input's last dimension, output's last dimension) for listings that state sizes."""
    seen: list[tuple] = []

    def record(module, args, out):
        seen.append((describe(module), args[0].shape[-1], out.shape[-1]) if sizes else describe(module))

    hooks = [m.register_forward_hook(record) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def init_stats(net: nn.Module, kind: type[nn.Module]) -> list[tuple[float, float, float, float]]:
    """(weight mean, weight std, bias mean, bias std) of every `kind` layer: what an init states."""
    out = []
    for m in net.modules():
        if isinstance(m, kind):
            w, b = m.weight.detach().float(), m.bias.detach().float() if m.bias is not None else torch.zeros(1)
            out.append((w.mean().item(), w.std().item(), b.mean().item(), b.std().item() if b.numel() > 1 else 0.0))
    return out
