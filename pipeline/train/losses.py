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

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import Tensor
# torch is imported where a loss is computed. The names params.yaml may use, and what each
# loss needs (soft targets, a gradient penalty, critic steps), are pipeline.core.registry.LOSSES.


def _softplus(x: Tensor) -> Tensor:
    from torch.nn.functional import softplus

    return softplus(x)


def bce_d_loss(real: Tensor, fake: Tensor, real_target: Tensor | float = 1.0, fake_target: Tensor | float = 0.0) -> Tensor:
    # BCE(sigmoid(l), t) = softplus(l) - t * l; with t = 1 / 0: -log D(x) - log(1 - D(G(z)))
    return (_softplus(real) - real_target * real).mean() + (_softplus(fake) - fake_target * fake).mean()


def minimax_g_loss(fake: Tensor) -> Tensor:
    # log(1 - sigmoid(f)) = -softplus(f)
    return -_softplus(fake).mean()


def non_saturating_g_loss(fake: Tensor) -> Tensor:
    # -log sigmoid(f) = softplus(-f)
    return _softplus(-fake).mean()


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return (1.0 - real).relu().mean() + (1.0 + fake).relu().mean()


def hinge_g_loss(fake: Tensor) -> Tensor:
    return -fake.mean()


def least_squares_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_g_loss(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


def wasserstein_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator=None) -> Tensor:
    """mean over samples of (||d critic(x_hat) / d x_hat||_2 - 1)^2, x_hat = e * real + (1 - e) * fake,
    e ~ U(0, 1) per sample. `critic` maps images to one output per sample. Differentiable (for D's step)."""
    import torch

    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, generator=generator, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
