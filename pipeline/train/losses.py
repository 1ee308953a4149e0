"""Adversarial losses, defined by their mathematics on D's raw logits.

With D(x) = sigmoid(logit):

* ``minimax``: the true saturating game of Goodfellow et al.; G *minimises* log(1 - D(G(z))).
  Its gradient w.r.t. the fake logit is -D(G(z)), which vanishes when D confidently rejects
  the fakes (early training). The widespread snippet ``-BCE(D(G(z)), zeros)`` is this loss.
* ``non_saturating``: G minimises -log D(G(z)) (i.e. maximises log D(G(z))); gradient
  D(G(z)) - 1, which stays near -1 exactly where the saturating one vanishes. The snippet
  ``BCE(D(G(z)), ones)`` is this loss.
* ``hinge``: D minimises relu(1 - real) + relu(1 + fake); G minimises -fake.
* ``least_squares`` (LSGAN, Mao et al. 2017, a = 0, b = c = 1): D minimises
  ((real - 1)^2 + fake^2) / 2, G minimises (fake - 1)^2 / 2, on D's raw output.
* ``wgan_gp`` (Gulrajani et al. 2017): the critic minimises fake - real plus
  10 * (||grad_x D(x_hat)|| - 1)^2 at random interpolates x_hat (see `gradient_penalty`),
  with 5 critic steps per G step; G minimises -fake. The penalty is per sample, so the critic
  must not use batch norm (the config refuses it).

Everything is computed from logits with softplus, never log(sigmoid(...)), so it stays finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import Tensor
# torch is imported where a loss is computed, not here: validating params.yaml reads LOSSES.


def _softplus(x: Tensor) -> Tensor:
    from torch.nn.functional import softplus

    return softplus(x)


def _bce_d_loss(real: Tensor, fake: Tensor, real_target: Tensor | float = 1.0, fake_target: Tensor | float = 0.0) -> Tensor:
    # BCE(sigmoid(l), t) = softplus(l) - t * l; with t = 1 / 0: -log D(x) - log(1 - D(G(z)))
    return (_softplus(real) - real_target * real).mean() + (_softplus(fake) - fake_target * fake).mean()


def _minimax_g_loss(fake: Tensor) -> Tensor:
    # log(1 - sigmoid(f)) = -softplus(f)
    return -_softplus(fake).mean()


def _non_saturating_g_loss(fake: Tensor) -> Tensor:
    # -log sigmoid(f) = softplus(-f)
    return _softplus(-fake).mean()


def _hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return (1.0 - real).relu().mean() + (1.0 + fake).relu().mean()


def _hinge_g_loss(fake: Tensor) -> Tensor:
    return -fake.mean()


def _least_squares_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def _least_squares_g_loss(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


def _wasserstein_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator=None) -> Tensor:
    """mean over samples of (||d critic(x_hat) / d x_hat||_2 - 1)^2, x_hat = e * real + (1 - e) * fake,
    e ~ U(0, 1) per sample. `critic` maps images to one output per sample. Differentiable (for D's step)."""
    import torch

    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, generator=generator, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[..., Tensor]  # (real_logits, fake_logits[, real_target, fake_target]) -> scalar
    g_loss: Callable[[Tensor], Tensor]
    doc: str
    soft_targets: bool = False  # d_loss accepts noisy / smoothed targets (the BCE losses)
    gp_weight: float = 0.0  # weight of the gradient penalty added to D's loss (wgan_gp: 10)
    n_critic: int = 1  # D updates per G update (the usual value; an experiment may override it)


LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", _bce_d_loss, _minimax_g_loss, "G minimises log(1 - D(G(z))) (saturating)",
                               soft_targets=True),
    "non_saturating": AdversarialLoss(
        "non_saturating", _bce_d_loss, _non_saturating_g_loss, "G minimises -log D(G(z))", soft_targets=True
    ),
    "hinge": AdversarialLoss("hinge", _hinge_d_loss, _hinge_g_loss, "hinge D, G minimises -D(G(z))"),
    "least_squares": AdversarialLoss("least_squares", _least_squares_d_loss, _least_squares_g_loss,
                                     "LSGAN: D (D(x) - 1)^2 + D(G(z))^2, G (D(G(z)) - 1)^2, halved"),
    "wgan_gp": AdversarialLoss("wgan_gp", _wasserstein_d_loss, _hinge_g_loss,
                               "WGAN-GP: critic D(G(z)) - D(x) + 10 GP, 5 critic steps; G -D(G(z))",
                               gp_weight=10.0, n_critic=5),
}
