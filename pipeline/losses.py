"""Adversarial losses, defined by their mathematics on D's raw logits.

With D(x) = sigmoid(logit):

* ``minimax``: the true saturating game of Goodfellow et al.; G *minimises* log(1 - D(G(z))).
  Its gradient w.r.t. the fake logit is -D(G(z)), which vanishes when D confidently rejects
  the fakes (early training). The widespread snippet ``-BCE(D(G(z)), zeros)`` is this loss.
* ``non_saturating``: G minimises -log D(G(z)) (i.e. maximises log D(G(z))); gradient
  D(G(z)) - 1, which stays near -1 exactly where the saturating one vanishes. The snippet
  ``BCE(D(G(z)), ones)`` is this loss.
* ``hinge``: D minimises relu(1 - real) + relu(1 + fake); G minimises -fake.

Everything is computed from logits with softplus, never log(sigmoid(...)), so it stays finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _bce_d_loss(real: Tensor, fake: Tensor, real_target: Tensor | float = 1.0, fake_target: Tensor | float = 0.0) -> Tensor:
    # BCE(sigmoid(l), t) = softplus(l) - t * l; with t = 1 / 0: -log D(x) - log(1 - D(G(z)))
    return (F.softplus(real) - real_target * real).mean() + (F.softplus(fake) - fake_target * fake).mean()


def _minimax_g_loss(fake: Tensor) -> Tensor:
    # log(1 - sigmoid(f)) = -softplus(f)
    return -F.softplus(fake).mean()


def _non_saturating_g_loss(fake: Tensor) -> Tensor:
    # -log sigmoid(f) = softplus(-f)
    return F.softplus(-fake).mean()


def _hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _hinge_g_loss(fake: Tensor) -> Tensor:
    return -fake.mean()


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[..., Tensor]  # (real_logits, fake_logits[, real_target, fake_target]) -> scalar
    g_loss: Callable[[Tensor], Tensor]
    doc: str
    soft_targets: bool = False  # d_loss accepts noisy / smoothed targets (the BCE losses)


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", _bce_d_loss, _minimax_g_loss, "G minimises log(1 - D(G(z))) (saturating)",
                               soft_targets=True),
    "non_saturating": AdversarialLoss(
        "non_saturating", _bce_d_loss, _non_saturating_g_loss, "G minimises -log D(G(z))", soft_targets=True
    ),
    "hinge": AdversarialLoss("hinge", _hinge_d_loss, _hinge_g_loss, "hinge D, G minimises -D(G(z))"),
}
