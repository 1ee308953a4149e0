"""The objective's terms on known tensors (no workspace, no MLflow store): WGAN-GP's penalty in D's
loss, ACGAN's class cross-entropies, the write-up's label noise; the latent samplers; and the
report's Student-t and Welch intervals against independently computed values."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats

from pipeline import nets
from pipeline.core.config import ExperimentConfig, LabelNoise
from pipeline.core.registry import LOSSES
from pipeline.nets.common import DOut
from pipeline.nets.sampling import Sampler, sample_z
from pipeline.report.stats import mean_ci, welch
from pipeline.train.terms import DStep, GStep, TrainingContext, terms_for
from pipeline.train.terms.adversarial import Adversarial
from pipeline.train.terms.class_head import ClassHead
from pipeline.train.terms.gradient_penalty import GradientPenalty


def experiment(**settings) -> ExperimentConfig:
    base = {"study": "t", "model": "mlp", "dataset": "d", "loss": "hinge", "seed": 0, "epochs": 1, "batch_size": 4,
            "lr_g": 1e-3, "lr_d": 1e-3, "z_dim": 4}
    return ExperimentConfig(**{**base, **settings})


def context(cfg: ExperimentConfig) -> TrainingContext:
    family = nets.FAMILIES[cfg.model]
    images = torch.zeros(8, 1, 4, 4, dtype=torch.uint8)
    return TrainingContext(cfg, family, family.Options(**cfg.model_args), LOSSES[cfg.loss], images,
                           torch.zeros(8, dtype=torch.long), lambda x: x.float() / 127.5 - 1, torch.device("cpu"))


def one_process_draw(make, n):
    return make(n)


def d_step(real, fake, real_out, fake_out, *, labels=None, fake_labels=None, d=None, draw=one_process_draw):
    return DStep(real, labels, fake, fake_labels, real_out, fake_out, real_out.logits, fake_out.logits,
                 d=d, draw=draw)


def composed_d_loss(terms, step):
    """D's loss as the trainer composes it: every term in TERMS order, starting from None."""
    loss = None
    for term in terms:
        loss = term.d_loss(step, loss)
    return loss


# ----- 1. WGAN-GP: the gradient penalty is part of D's loss ------------------------------------------

W = torch.tensor([[[2.0, 0.0], [1.0, 2.0]]], dtype=torch.float64)  # |W| = 3


def linear_critic(w, seen_labels=None):
    """D(x) = <w, x>: its input gradient is w at every point, so GP = (|w| - 1)^2 whatever the interpolates."""
    def d(x, labels=None):
        if seen_labels is not None:
            seen_labels.append(labels)
        return DOut((x * w).flatten(1).sum(1))
    return d


def test_gradient_penalty_term_adds_ten_times_the_penalty_to_d_loss_and_trains_d_with_it():
    term = GradientPenalty.from_config(context(experiment(loss="wgan_gp")))
    assert isinstance(term, GradientPenalty) and term.weight == 10.0
    assert GradientPenalty.from_config(context(experiment(loss="hinge"))) is None
    torch.manual_seed(0)
    w = W.clone().requires_grad_(True)
    real, fake = torch.randn(5, 1, 2, 2, dtype=torch.float64), torch.randn(5, 1, 2, 2, dtype=torch.float64)
    labels, seen = torch.arange(5), []
    d = linear_critic(w, seen)
    step = d_step(real, fake, d(real), d(fake), labels=labels, fake_labels=labels, d=d)
    before = torch.tensor(1.5, dtype=torch.float64)
    with_gp = term.d_loss(step, before)
    assert with_gp.item() == pytest.approx(1.5 + 10.0 * (3.0 - 1.0) ** 2)  # lambda * (|w| - 1)^2 = 40
    assert seen[-1] is labels  # the critic is asked with the real batch's labels (conditional critics)
    with_gp.backward()  # the penalty's gradient reaches D: d/dw 10 (|w| - 1)^2 = 20 (|w| - 1) w / |w|
    torch.testing.assert_close(w.grad, 20 * (3.0 - 1.0) * W / 3.0)


def test_gradient_penalty_is_per_sample_on_the_unaugmented_batch():
    """Quadratic critic D(x) = |x|^2 / 2 with real = fake = v: every interpolate is v, its gradient
    v, so GP = mean_i (|v_i| - 1)^2 = ((5 - 1)^2 + (1 - 1)^2) / 2 = 8, and D's loss grows by 80."""
    def d(x, labels=None):
        return DOut(0.5 * (x**2).flatten(1).sum(1))
    v = torch.tensor([[[[3.0, 4.0]]], [[[0.6, 0.8]]]], dtype=torch.float64)  # norms 5 and 1
    step = d_step(v, v, d(v), d(v), d=d)
    out = GradientPenalty(10.0, "wgan_gp").d_loss(step, torch.tensor(0.0, dtype=torch.float64))
    assert out.item() == pytest.approx(80.0)


def test_wgan_gp_objective_is_wasserstein_plus_the_penalty():
    """The terms an experiment with loss wgan_gp gets, composed as the trainer composes them:
    D's loss = mean D(fake) - mean D(real) + 10 (|w| - 1)^2."""
    terms = terms_for(context(experiment(loss="wgan_gp")))
    assert [type(t).__name__ for t in terms] == ["Adversarial", "GradientPenalty"]
    torch.manual_seed(1)
    w = W.clone().requires_grad_(True)
    real, fake = torch.randn(6, 1, 2, 2, dtype=torch.float64), torch.randn(6, 1, 2, 2, dtype=torch.float64)
    d = linear_critic(w)
    step = d_step(real, fake, d(real), d(fake), d=d)
    loss = composed_d_loss(terms, step)
    wasserstein = ((fake * W).flatten(1).sum(1).mean() - (real * W).flatten(1).sum(1).mean()).item()
    assert loss.item() == pytest.approx(wasserstein + 40.0)


# ----- 4. ACGAN's class head ----------------------------------------------------------------------

def nll_of_log_softmax(logits, labels):
    """The write-up's class criterion: NLLLoss on LogSoftmax outputs, computed by hand."""
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    return -log_p[torch.arange(len(labels)), labels].mean()


CLASS_REAL = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -2.0, 0.5]])
CLASS_FAKE = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.5, 2.5], [1.5, 0.0, 0.0], [0.0, 2.0, -1.0]])
LABELS = torch.tensor([0, 1, 2, 0])  # the real batch's
FAKE_LABELS = torch.tensor([2, 2, 1, 0])  # what G was given (differs from LABELS: a mix-up shows)


def test_class_head_adds_the_real_and_the_generated_class_cross_entropy_to_d_loss():
    term = ClassHead.from_config(context(experiment(model="acgan")))
    assert isinstance(term, ClassHead) and ClassHead.from_config(context(experiment(model="cgan"))) is None
    real_out, fake_out = DOut(torch.zeros(4), CLASS_REAL), DOut(torch.zeros(4), CLASS_FAKE)
    step = d_step(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), real_out, fake_out, labels=LABELS,
                  fake_labels=FAKE_LABELS)
    cls_real, cls_fake = nll_of_log_softmax(CLASS_REAL, LABELS), nll_of_log_softmax(CLASS_FAKE, FAKE_LABELS)
    # the wrong pairings give other values, so any of them would show
    for wrong in (nll_of_log_softmax(CLASS_FAKE, LABELS), nll_of_log_softmax(CLASS_REAL, FAKE_LABELS)):
        assert abs(wrong - cls_fake) > 0.1 and abs(wrong - cls_real) > 0.1
    out = term.d_loss(step, torch.tensor(0.25))
    assert out.item() == pytest.approx(0.25 + cls_real.item() + cls_fake.item(), rel=1e-6)
    assert step.stats["cls_real"].item() == pytest.approx(cls_real.item(), rel=1e-6)
    assert step.stats["cls_fake"].item() == pytest.approx(cls_fake.item(), rel=1e-6)
    assert term.derived_stats({"cls_real": 2.0, "cls_fake": 3.0}) == {"cls_ratio": 1.5}


def test_class_head_gradient_reaches_both_class_outputs_of_d():
    real_logits, fake_logits = CLASS_REAL.clone().requires_grad_(True), CLASS_FAKE.clone().requires_grad_(True)
    step = d_step(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), DOut(torch.zeros(4), real_logits),
                  DOut(torch.zeros(4), fake_logits), labels=LABELS, fake_labels=FAKE_LABELS)
    ClassHead().d_loss(step, torch.tensor(0.0)).backward()
    # d CE / d logits = (softmax - onehot) / n, each on its own batch with its own labels
    torch.testing.assert_close(real_logits.grad, (CLASS_REAL.softmax(1) - F.one_hot(LABELS, 3)) / 4)
    torch.testing.assert_close(fake_logits.grad, (CLASS_FAKE.softmax(1) - F.one_hot(FAKE_LABELS, 3)) / 4)


def test_class_head_g_loss_is_the_cross_entropy_of_the_generated_images_with_their_labels():
    gen_logits = CLASS_FAKE.clone().requires_grad_(True)
    step = GStep(DOut(torch.zeros(4), gen_logits), torch.zeros(4, 1, 2, 2), FAKE_LABELS, torch.zeros(4, 1, 2, 2),
                 d=None, d_input=lambda x: x)
    (name, value), = ClassHead().g_loss(step).items()
    assert name == "loss_cls"
    assert value.item() == pytest.approx(nll_of_log_softmax(CLASS_FAKE, FAKE_LABELS).item(), rel=1e-6)
    value.backward()  # G is pushed towards the class it was asked for (its label's logit up)
    torch.testing.assert_close(gen_logits.grad, (CLASS_FAKE.softmax(1) - F.one_hot(FAKE_LABELS, 3)) / 4)


def test_acgan_objective_is_the_adversarial_loss_plus_both_class_terms():
    """The write-up's D loss (without label noise): BCE(real, 1) + BCE(fake, 0) + CE(real classes,
    labels) + CE(generated classes, G's labels), composed from the terms an acgan experiment gets."""
    terms = terms_for(context(experiment(model="acgan", loss="minimax")))
    assert [type(t).__name__ for t in terms] == ["Adversarial", "ClassHead"]
    real_tf, fake_tf = torch.tensor([1.0, -0.5, 0.2, 2.0]), torch.tensor([-1.0, 0.3, 0.0, -2.0])
    step = d_step(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 2, 2), DOut(real_tf, CLASS_REAL),
                  DOut(fake_tf, CLASS_FAKE), labels=LABELS, fake_labels=FAKE_LABELS)
    bce = (F.binary_cross_entropy_with_logits(real_tf, torch.ones(4))
           + F.binary_cross_entropy_with_logits(fake_tf, torch.zeros(4)))
    expected = bce + nll_of_log_softmax(CLASS_REAL, LABELS) + nll_of_log_softmax(CLASS_FAKE, FAKE_LABELS)
    assert composed_d_loss(terms, step).item() == pytest.approx(expected.item(), rel=1e-6)


# ----- 5. The write-up's label noise ------------------------------------------------------------

def test_label_noise_targets_cover_the_write_ups_ranges():
    """D's targets as the loss receives them, recovered from its gradient: with all logits 0,
    d/dl mean(softplus(l) - t l) = (1/2 - t) / n, so t = 1/2 - n grad. The write-up draws
    per sample real ~ U(0.7, 1.2) (torch.rand / 2 + 0.7) and fake ~ U(0, 0.3) (torch.rand * 0.3)."""
    cfg = experiment(model="acgan", loss="minimax", label_noise={"real": [0.7, 1.2], "fake": [0.0, 0.3]})
    (term,) = [t for t in terms_for(context(cfg)) if isinstance(t, Adversarial)]
    assert term.label_noise == LabelNoise(real=(0.7, 1.2), fake=(0.0, 0.3))
    n = 20_000
    real = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    fake = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    draws = []

    def draw(make, count):  # the process's share of the global batch's random numbers
        draws.append(count)
        return make(count)

    torch.manual_seed(0)
    step = DStep(None, None, None, None, None, None, real, fake, d=None, draw=draw)
    term.d_loss(step, None).backward()
    assert draws == [n, n]  # both targets are drawn through step.draw (identical in every DDP process)
    targets = {"real": (0.5 - n * real.grad).numpy(), "fake": (0.5 - n * fake.grad).numpy()}
    for name, (lo, hi) in (("real", (0.7, 1.2)), ("fake", (0.0, 0.3))):
        t = targets[name]
        assert lo - 1e-9 <= t.min() and t.max() <= hi + 1e-9, name  # within the range (not swapped)
        assert t.min() < lo + 0.01 and t.max() > hi - 0.01, name  # and covering it (not a constant 1 / 0)
        assert t.mean() == pytest.approx((lo + hi) / 2, abs=0.005), name  # uniform: mean and sd of U(lo, hi)
        assert t.std() == pytest.approx((hi - lo) / math.sqrt(12), abs=0.005), name
        assert len(np.unique(t)) > n * 0.99, name  # one target per sample


def test_without_label_noise_the_targets_are_one_and_zero():
    term = Adversarial(LOSSES["minimax"], None, for_g=True)
    real = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    fake = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    term.d_loss(DStep(None, None, None, None, None, None, real, fake, d=None, draw=one_process_draw), None).backward()
    torch.testing.assert_close(0.5 - 8 * real.grad, torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(0.5 - 8 * fake.grad, torch.zeros(8, dtype=torch.float64))


# ----- 6. Latent sampling -----------------------------------------------------------------------

def latent(z_dist, z_mean=0.0, z_dim=100):
    return SimpleNamespace(z_dim=z_dim, z_dist=z_dist, z_mean=z_mean)


def test_normal_latents_with_a_mean_shift_are_the_write_ups_n_half_one():
    """Write-up 000: z = torch.normal(mean=0.5, std=1, size=(batch, 100))."""
    z = sample_z(20_000, latent("normal", 0.5), device="cpu", generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 100)
    assert z.mean().item() == pytest.approx(0.5, abs=0.005) and z.std().item() == pytest.approx(1.0, abs=0.005)
    assert torch.allclose(z.mean(0), torch.full((100,), 0.5), atol=0.05)  # every dimension shifted
    assert z.min() < -3.0 and z.max() > 4.0  # unbounded (a normal, not a uniform)
    assert ((z - 0.5).abs() < 1).float().mean().item() == pytest.approx(0.6827, abs=0.005)  # within one sd


def test_uniform_latents_are_the_write_ups_u_minus_one_one():
    """Write-up 003: z ~ U(-1, 1)."""
    z = sample_z(20_000, latent("uniform"), device="cpu", generator=torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1 and z.min() < -0.999 and z.max() > 0.999
    assert z.mean().item() == pytest.approx(0.0, abs=0.005)
    assert z.std().item() == pytest.approx(2 / math.sqrt(12), abs=0.005)
    shifted = sample_z(20_000, latent("uniform", 0.5), device="cpu", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, z + 0.5)  # z_mean shifts a uniform too


def test_the_logged_sampler_draws_the_experiments_latents():
    """Sampler (the MLflow generator model) draws with its run's z_dist / z_mean, as training does."""
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward(self, z, y=None):
            self.seen.append(z)
            return torch.zeros(len(z), 1, 2, 2)

    for z_dist, z_mean, check in (("normal", 0.5, lambda z: abs(z.mean() - 0.5) < 0.02 and z.max() > 2.5),
                                  ("uniform", 0.0, lambda z: abs(z.mean()) < 0.02 and z.abs().max() <= 1)):
        G = Recorder()
        Sampler(G, z_dim=50, z_dist=z_dist, z_mean=z_mean, num_classes=0, conditional=False).sample(512, seed=3)
        z = torch.cat(G.seen)
        assert z.shape == (512, 50) and check(z), z_dist


# ----- 7. The report's intervals ----------------------------------------------------------------

def test_mean_ci_is_a_student_t_interval():
    """[1, 2, 3]: mean 2, s = 1, half-width t(0.975, 2) s / sqrt(3) = 4.30265 / 1.73205 = 2.48414
    (a normal quantile, 1.96, would give 1.13). [0, 1]: t(0.975, 1) = 12.7062, s = 0.70711,
    half-width 12.7062 x 0.70711 / 1.41421 = 6.3531."""
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 2.48414, 2.0 + 2.48414), abs=1e-4)
    mean, lo, hi = mean_ci([0.0, 1.0])
    assert (mean, lo, hi) == pytest.approx((0.5, 0.5 - 6.35310, 0.5 + 6.35310), abs=1e-4)
    mean, lo, hi = mean_ci([4.0])
    assert mean == 4.0 and math.isnan(lo) and math.isnan(hi)


def test_welch_matches_a_hand_computed_case_and_scipys_welch_test():
    """a = [1, 2, 3] (mean 2, s^2 1), b = [4, 6, 8, 10] (mean 7, s^2 20/3): s_a^2/3 = 1/3,
    s_b^2/4 = 5/3, se = sqrt(2), t = -5 / sqrt(2) = -3.5355, Welch-Satterthwaite
    df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 216 / 53 = 4.0755; t(0.975, 4.0755) = 2.7563, half-width
    3.8980 (a normal quantile would give 1.96 x sqrt(2) = 2.77); two-sided p = 0.02338."""
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]
    diff, lo, hi, p = welch(a, b)
    assert diff == -5.0
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)  # scipy's Welch test, the independent reference
    assert reference.df == pytest.approx(216 / 53) and reference.statistic == pytest.approx(-5 / math.sqrt(2))
    ci = reference.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert (lo, hi) == pytest.approx((-5 - 3.8980, -5 + 3.8980), abs=1e-3)
    assert p == pytest.approx(reference.pvalue, rel=1e-9) and p == pytest.approx(0.02338, abs=1e-4)
