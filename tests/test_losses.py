"""Each loss pinned by value and by the behaviour of its gradient w.r.t. the fake logit."""
import math

import pytest
import torch

from pipeline.core.registry import LOSSES


def g_value_and_grad(name: str, logit: float) -> tuple[float, float]:
    fake = torch.tensor([logit], dtype=torch.float64, requires_grad=True)
    loss = LOSSES[name].g_loss(fake)
    loss.backward()
    return loss.item(), fake.grad.item()


@pytest.mark.parametrize("logit", [-3.0, 0.0, 2.5])
def test_generator_loss_values_match_their_definitions(logit):
    d = 1 / (1 + math.exp(-logit))  # D(G(z))
    assert g_value_and_grad("minimax", logit)[0] == pytest.approx(math.log(1 - d))
    assert g_value_and_grad("non_saturating", logit)[0] == pytest.approx(-math.log(d))
    assert g_value_and_grad("hinge", logit)[0] == pytest.approx(-logit)


def test_common_bce_snippets_are_what_we_call_them():
    """-BCE(D(G(z)), 0) is the saturating loss, BCE(D(G(z)), 1) the non-saturating one."""
    logits = torch.tensor([-4.0, -1.0, 0.5, 3.0], dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert LOSSES["minimax"].g_loss(logits).item() == pytest.approx(-bce(logits, torch.zeros_like(logits)).item())
    assert LOSSES["non_saturating"].g_loss(logits).item() == pytest.approx(bce(logits, torch.ones_like(logits)).item())


def test_saturating_gradient_vanishes_when_d_rejects_fakes():
    for logit in (-5.0, -10.0, -20.0):
        _, grad = g_value_and_grad("minimax", logit)
        d = 1 / (1 + math.exp(-logit))
        assert grad == pytest.approx(-d, rel=1e-9)  # d/dl log(1 - sigmoid(l)) = -sigmoid(l)
    assert abs(g_value_and_grad("minimax", -20.0)[1]) < 1e-8


def test_non_saturating_gradient_stays_large_when_d_rejects_fakes():
    for logit in (-5.0, -10.0, -20.0):
        _, grad = g_value_and_grad("non_saturating", logit)
        assert grad == pytest.approx(1 / (1 + math.exp(-logit)) - 1, rel=1e-9)
        assert grad < -0.99


def test_hinge_generator_gradient_is_constant():
    assert g_value_and_grad("hinge", -20.0)[1] == pytest.approx(-1.0)
    assert g_value_and_grad("hinge", 5.0)[1] == pytest.approx(-1.0)


def test_discriminator_losses():
    real = torch.tensor([2.0, -0.5], dtype=torch.float64)
    fake = torch.tensor([-1.0, 0.3], dtype=torch.float64)
    sig = torch.sigmoid
    expected_bce = (-torch.log(sig(real))).mean() + (-torch.log(1 - sig(fake))).mean()
    for name in ("minimax", "non_saturating"):
        assert LOSSES[name].d_loss(real, fake).item() == pytest.approx(expected_bce.item())
    expected_hinge = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    assert LOSSES["hinge"].d_loss(real, fake).item() == pytest.approx(expected_hinge.item())
    # a perfect discriminator pays (almost) nothing
    assert LOSSES["minimax"].d_loss(torch.tensor([30.0]), torch.tensor([-30.0])).item() < 1e-12


def test_losses_stay_finite_at_extreme_logits():
    extreme = torch.tensor([-1e4, 1e4], requires_grad=True)
    for loss in LOSSES.values():
        value = loss.g_loss(extreme) + loss.d_loss(extreme, extreme)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(extreme.grad).all()
        extreme.grad = None


def test_noisy_targets_are_bce_with_soft_labels():
    """The write-up's noisy D targets (real ~ U(0.7, 1.2), fake ~ U(0, 0.3)) are BCE against those targets."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    t_real = 0.7 + 0.5 * torch.rand(6, generator=gen, dtype=torch.float64)
    t_fake = 0.3 * torch.rand(6, generator=gen, dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = bce(real, t_real) + bce(fake, t_fake)
    for name in ("minimax", "non_saturating"):
        assert LOSSES[name].soft_targets
        assert LOSSES[name].d_loss(real, fake, t_real, t_fake).item() == pytest.approx(expected.item(), rel=1e-12)
    assert not LOSSES["hinge"].soft_targets


@pytest.mark.parametrize("logit", [-3.0, 0.0, 2.5])
def test_least_squares_and_wasserstein_generator_losses(logit):
    value, grad = g_value_and_grad("least_squares", logit)
    assert value == pytest.approx(0.5 * (logit - 1) ** 2) and grad == pytest.approx(logit - 1)
    value, grad = g_value_and_grad("wgan_gp", logit)
    assert value == pytest.approx(-logit) and grad == pytest.approx(-1.0)


def test_least_squares_and_wasserstein_discriminator_losses():
    real = torch.tensor([2.0, -0.5], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([-1.0, 0.3], dtype=torch.float64, requires_grad=True)
    ls = LOSSES["least_squares"].d_loss(real, fake)
    assert ls.item() == pytest.approx(0.5 * ((1.0 + 2.25) / 2) + 0.5 * ((1.0 + 0.09) / 2))
    ls.backward()
    torch.testing.assert_close(real.grad, (real.detach() - 1) / 2)  # d/dr 0.5 * mean((r - 1)^2), n = 2
    torch.testing.assert_close(fake.grad, fake.detach() / 2)
    real.grad = fake.grad = None
    w = LOSSES["wgan_gp"].d_loss(real, fake)
    assert w.item() == pytest.approx((-1.0 + 0.3) / 2 - (2.0 - 0.5) / 2)
    w.backward()
    torch.testing.assert_close(real.grad, torch.full((2,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(fake.grad, torch.full((2,), 0.5, dtype=torch.float64))
    assert LOSSES["wgan_gp"].n_critic == 5 and LOSSES["wgan_gp"].gp_weight == 10.0


def test_gradient_penalty_against_hand_computation():
    from pipeline.train.losses import gradient_penalty

    # Linear critic D(x) = <w, x>: its gradient is w at every interpolate, so GP = (|w| - 1)^2.
    w = torch.tensor([[[2.0, 0.0], [1.0, 2.0]]], dtype=torch.float64, requires_grad=True)  # |w| = 3
    real = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    penalty = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    assert penalty.item() == pytest.approx(4.0)
    penalty.backward()  # create_graph: the penalty trains the critic
    torch.testing.assert_close(w.grad, 2 * (3.0 - 1.0) * w.detach() / 3.0)
    # Quadratic critic D(x) = |x|^2 / 2 with real = fake = v: x_hat = v whatever e, GP = (|v| - 1)^2.
    v = torch.tensor([[[[3.0, 4.0]]], [[[0.6, 0.8]]]], dtype=torch.float64)  # norms 5 and 1
    penalty = gradient_penalty(lambda x: 0.5 * (x**2).flatten(1).sum(1), v, v)
    assert penalty.item() == pytest.approx(((5 - 1) ** 2 + 0) / 2)
