"""Model families, by name: each a `Family` with its `model_args` schema, a shape check, what it
needs (labels, a class head) and where its networks are built.

``build(opts, *, z_dim, channels, resolution, num_classes) -> (G, D)`` with
``G(z, y=None) -> images in [-1, 1]`` and ``D(x, y=None) -> DOut`` (pipeline.nets.common).
Conditional families read the labels ``y``; the others ignore them. The registry imports no
torch: validating params.yaml reads it, and only building a family imports its module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from pipeline.nets import options
from pipeline.core.schema import StrictModel


@dataclass(frozen=True)
class Family:
    Options: type[StrictModel]
    builder: str  # "module:function" that builds (G, D); imported on first use (it imports torch)
    check_shape: Callable[[int, int], str | None]  # (channels, resolution) -> why it cannot, or None
    conditional: bool = False  # G and D are given the labels
    class_head: bool = False  # D predicts the class of its input (ACGAN)
    d_features: bool = False  # D returns its intermediate features (what feature matching matches)
    d_batchnorm: Callable[[StrictModel], bool] = lambda opts: True  # does D use batch norm with these options?

    def batchnorm_in_d(self, model_args: dict) -> bool:
        return self.d_batchnorm(self.Options(**model_args))

    def build(self, opts: StrictModel, **shape):
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(opts, **shape)


def _d_norm_is_batch(opts: StrictModel) -> bool:
    return opts.d_norm == "batch"


FAMILIES: dict[str, Family] = {
    "mlp": Family(options.MlpOptions, "pipeline.nets.mlp:build", options.mlp_shape, d_batchnorm=lambda opts: False),
    "dcgan": Family(options.DcganOptions, "pipeline.nets.dcgan:build", options.dcgan_shape,
                    d_features=True, d_batchnorm=_d_norm_is_batch),
    "cgan": Family(options.ConditionalOptions, "pipeline.nets.cgan:build", options.conditional_shape,
                   conditional=True, d_batchnorm=_d_norm_is_batch),
    "acgan": Family(options.ConditionalOptions, "pipeline.nets.acgan:build", options.conditional_shape,
                    conditional=True, class_head=True, d_batchnorm=_d_norm_is_batch),
    "projected": Family(options.ProjectedOptions, "pipeline.nets.projected:build", options.projected_shape),
}
