"""Model families. Each is a `Family`: its `model_args` schema, a shape check and a builder.

``build(opts, *, z_dim, channels, resolution, num_classes) -> (G, D)`` with
``G(z, y=None) -> images in [-1, 1]`` and ``D(x, y=None) -> DOut``. Conditional families
read the labels ``y``; the others ignore them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.nets import conditional, dcgan, mlp, projected
from pipeline.nets.common import DOut  # noqa: F401  (re-exported: what every D returns)
from pipeline.schema import StrictModel


@dataclass(frozen=True)
class Family:
    Options: type[StrictModel]
    build: Callable
    check_shape: Callable[[int, int], str | None]  # (channels, resolution) -> why it cannot, or None
    conditional: bool = False  # G and D are given the labels
    class_head: bool = False  # D predicts the class of its input (ACGAN)
    d_batchnorm: Callable[[StrictModel], bool] = lambda opts: True  # does D use batch norm with these options?

    def batchnorm_in_d(self, model_args: dict) -> bool:
        return self.d_batchnorm(self.Options(**model_args))


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.Options, mlp.build, mlp.check_shape, d_batchnorm=lambda opts: False),
    "dcgan": Family(dcgan.Options, dcgan.build, dcgan.check_shape, d_batchnorm=lambda opts: opts.d_norm == "batch"),
    "cgan": Family(conditional.Options, conditional.build_cgan, conditional.check_shape, conditional=True),
    "acgan": Family(conditional.Options, conditional.build_acgan, conditional.check_shape, conditional=True,
                    class_head=True),
    "projected": Family(projected.Options, projected.build, projected.check_shape),
}
