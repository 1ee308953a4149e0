"""The adversarial losses params.yaml may name, with what validating an experiment needs to know
about each. The mathematics is in pipeline/train/losses.py; a loss's functions are imported the
first time a training computes with them, so validating params.yaml (every stage) does not
depend on that file, and editing a loss re-runs only the stages that train or evaluate.

The other registries: model families in pipeline/nets/__init__.py (FAMILIES), feature
extractors in pipeline/core/extractors.py (EXTRACTORS), dataset sources in
pipeline/data/official.py (SOURCES), objective terms in pipeline/train/terms/__init__.py.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d: str  # "module:function": (real_logits, fake_logits[, real_target, fake_target]) -> scalar
    g: str  # "module:function": fake_logits -> scalar
    doc: str
    soft_targets: bool = False  # d_loss accepts noisy / smoothed targets (the BCE losses)
    gp_weight: float = 0.0  # weight of the gradient penalty added to D's loss (wgan_gp: 10)
    n_critic: int = 1  # D updates per G update (the usual value; an experiment may override it)

    @property
    def d_loss(self) -> Callable:
        return _resolve(self.d)

    @property
    def g_loss(self) -> Callable:
        return _resolve(self.g)


def _resolve(target: str) -> Callable:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", "pipeline.train.losses:bce_d_loss", "pipeline.train.losses:minimax_g_loss",
                               "G minimises log(1 - D(G(z))) (saturating)", soft_targets=True),
    "non_saturating": AdversarialLoss("non_saturating", "pipeline.train.losses:bce_d_loss",
                                      "pipeline.train.losses:non_saturating_g_loss", "G minimises -log D(G(z))",
                                      soft_targets=True),
    "hinge": AdversarialLoss("hinge", "pipeline.train.losses:hinge_d_loss", "pipeline.train.losses:hinge_g_loss",
                             "hinge D, G minimises -D(G(z))"),
    "least_squares": AdversarialLoss("least_squares", "pipeline.train.losses:least_squares_d_loss",
                                     "pipeline.train.losses:least_squares_g_loss",
                                     "LSGAN: D (D(x) - 1)^2 + D(G(z))^2, G (D(G(z)) - 1)^2, halved"),
    "wgan_gp": AdversarialLoss("wgan_gp", "pipeline.train.losses:wasserstein_d_loss",
                               "pipeline.train.losses:hinge_g_loss",
                               "WGAN-GP: critic D(G(z)) - D(x) + 10 GP, 5 critic steps; G -D(G(z))",
                               gp_weight=10.0, n_critic=5),
}
