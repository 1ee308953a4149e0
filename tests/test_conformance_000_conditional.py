"""Conformance with write-up 000 (ACGAN from a cGAN on Kuzushiji-49): its listing, layer by layer.

The listing (../shared/seeds/000_6e2b2907789c5c26.txt) gives the ACGAN discriminator, its
initialisation and `train_func`, the training step. It does not list the generator, the cGAN's
discriminator (both are in the write-up's previous article), the batch size or the optimiser:
docs/deviations.md says what ganlab uses there. The "as written" experiments are the paper
study's (studies/paper.yaml), at the write-up's widths; the cpu study runs the same layers at a
quarter of the widths.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import nets
from pipeline.core.config import load_params, resolve_experiment
from pipeline.core.registry import LOSSES
from tests.conformance import init_stats, layers_run
from tests.conftest import REPO_ROOT

K = 5  # the write-up's first run after 49 classes: 5 (あ..お)
PAPER = load_params(REPO_ROOT / "studies/paper.yaml")
CPU = load_params(REPO_ROOT / "studies/cpu.yaml")

# class Discriminator(nn.Module), transcribed in the listing's order:
#   self.conv = nn.Sequential(
#       nn.Conv2d(1, 64, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2),
#       nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.BatchNorm2d(128))
#   x = x.view(-1, 128 * 7 * 7)
#   self.fc = nn.Sequential(nn.Linear(128 * 7 * 7, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2))
#   self.fc_TF = nn.Sequential(nn.Linear(1024, 1), nn.Sigmoid())
#   self.fc_class = nn.Sequential(nn.Linear(num_class, ...), nn.LogSoftmax(dim=1))
LISTING_D = [
    ("Conv2d", 1, 64, 4, 2, 1, True), ("LeakyReLU", 0.2),
    ("Conv2d", 64, 128, 4, 2, 1, True), ("LeakyReLU", 0.2), ("BatchNorm2d", 128),
    ("Flatten",),  # x.view(-1, 128 * 7 * 7)
    ("Linear", 128 * 7 * 7, 1024, True), ("BatchNorm1d", 1024), ("LeakyReLU", 0.2),
    ("Linear", 1024, 1, True), ("Sigmoid",),
    ("Linear", 1024, K, True), ("LogSoftmax",),
]
# Documented in docs/deviations.md ("The write-ups' own code" / losses from logits): D returns
# logits; the Sigmoid and the LogSoftmax are applied inside the losses (checked below to give the
# listing's BCELoss / NLLLoss values).
HEAD_ACTIVATIONS = {("Sigmoid",), ("LogSoftmax",)}


def build(params, name: str):
    cfg = resolve_experiment(params, name)
    family = nets.FAMILIES[cfg.model]
    G, D = family.build(family.Options(**cfg.model_args), z_dim=cfg.z_dim, channels=1, resolution=28, num_classes=K)
    return cfg, G, D


def images_and_labels(n: int = 4):
    return torch.randn(n, 1, 28, 28), torch.arange(n) % K


def test_acgan_discriminator_is_the_listings_layer_for_layer():
    _, _, D = build(PAPER, "acgan_k49_5_s0")
    listed = [layer for layer in LISTING_D if layer not in HEAD_ACTIVATIONS]
    assert layers_run(D, *images_and_labels()) == listed


def test_cpu_scale_acgan_runs_the_same_layers_at_a_quarter_of_the_widths():
    """The cpu study's 'as written' nets: the listing's layer types and order, widths 32 / 64 / 256."""
    _, _, D = build(CPU, "acgan_kmnist5_s0")
    w, fc = 32, 256
    quarter = [("Conv2d", 1, w, 4, 2, 1, True), ("LeakyReLU", 0.2),
               ("Conv2d", w, 2 * w, 4, 2, 1, True), ("LeakyReLU", 0.2), ("BatchNorm2d", 2 * w),
               ("Flatten",), ("Linear", 2 * w * 7 * 7, fc, True), ("BatchNorm1d", fc), ("LeakyReLU", 0.2),
               ("Linear", fc, 1, True), ("Linear", fc, K, True)]
    assert layers_run(D, *images_and_labels()) == quarter


def test_cgan_discriminator_is_the_acgan_trunk_with_the_label_as_input_and_no_class_head():
    """The write-up builds ACGAN's D from its cGAN's by removing the label from D's input and adding
    the class head ("Discriminatorの入力からラベル情報をなくす / 出力にクラス分類を足す"): so the cGAN's D is
    the same trunk reading the image plus the label (one plane per class) and one real/fake output."""
    _, _, D = build(PAPER, "cgan_k49_5_s0")
    listed = [layer for layer in LISTING_D if layer not in HEAD_ACTIVATIONS][:-1]  # no class head
    listed[0] = ("Conv2d", 1 + K, 64, 4, 2, 1, True)
    assert layers_run(D, *images_and_labels()) == listed


def test_d_initialisation_is_the_listings():
    """init_weights: Conv2d and Linear weights N(0, 0.02) and zero bias; BatchNorm1d / 2d weights
    N(1, 0.02) and zero bias."""
    torch.manual_seed(0)
    _, _, D = build(PAPER, "acgan_k49_5_s0")
    for kind, mean in ((nn.Conv2d, 0.0), (nn.Linear, 0.0), (nn.BatchNorm1d, 1.0), (nn.BatchNorm2d, 1.0)):
        for w_mean, w_std, b_mean, b_std in init_stats(D, kind):
            assert w_mean == pytest.approx(mean, abs=0.01) and w_std == pytest.approx(0.02, rel=0.25), kind
            assert b_mean == 0 and b_std == 0, kind


def test_the_losses_on_logits_are_the_listings_bce_and_nll_on_sigmoid_and_log_softmax():
    """Why dropping the head activations changes nothing: our losses from logits equal the listing's
    BCELoss(Sigmoid(.)) with its noisy targets and NLLLoss(LogSoftmax(.)), on the same numbers."""
    torch.manual_seed(0)
    real, fake = torch.randn(64), torch.randn(64)
    t_real, t_fake = torch.rand(64) / 2 + 0.7, torch.rand(64) * 0.3  # D_y_real, D_y_fake
    bce = nn.BCELoss()

    def bce_formula(p, t):
        """BCELoss's formula: today's nn.BCELoss refuses the listing's real targets above 1
        ("all elements of target should be between 0 and 1"); the formula is what it computed."""
        return -(t * p.log() + (1 - t) * (1 - p).log()).mean()

    with pytest.raises(RuntimeError, match="between 0 and 1"):
        bce(torch.sigmoid(real), t_real)
    listing_d = bce_formula(torch.sigmoid(real), t_real) + bce_formula(torch.sigmoid(fake), t_fake)  # D_TF_loss
    assert LOSSES["minimax"].d_loss(real, fake, t_real, t_fake).item() == pytest.approx(listing_d.item(), rel=1e-5)
    # G_TF_loss = -TF_criterion(D_fake_TF_2, y_fake) = -BCE(D(G(z)), 0) = log(1 - D(G(z))): our minimax
    listing_g = -bce(torch.sigmoid(fake), torch.zeros(64))
    assert LOSSES["minimax"].g_loss(fake).item() == pytest.approx(listing_g.item(), rel=1e-5)
    logits, labels = torch.randn(64, K), torch.randint(0, K, (64,))
    assert F.cross_entropy(logits, labels).item() == pytest.approx(
        nn.NLLLoss()(nn.LogSoftmax(dim=1)(logits), labels).item(), rel=1e-6)


def test_the_recipe_is_the_listings():
    """train_func and the text around it: z ~ N(0.5, 1) of 100 dims ("100次元・平均0.5・標準偏差1"),
    D targets U(0.7, 1.2) for real (rand/2 + 0.7) and U(0, 0.3) for fake (rand * 0.3), G's loss
    -BCE(D(G(z)), 0), G drawn with the real batch's labels (G_model(z, label)), both nets in training
    mode for D's step (D_model.train(); G_model.train()), 100 epochs; class-head pre-training 20
    epochs, then 300."""
    cfg = resolve_experiment(PAPER, "acgan_k49_5_s0")
    assert (cfg.z_dim, cfg.z_dist, cfg.z_mean) == (100, "normal", 0.5)
    assert cfg.label_noise.real == (0.7, 1.2) and cfg.label_noise.fake == (0.0, 0.3)
    assert cfg.loss == "minimax" and cfg.fake_labels == "batch" and not cfg.d_step_inference_mode
    assert cfg.epochs == 100 and cfg.pretrain_classifier_epochs == 0
    pretrained = resolve_experiment(PAPER, "acgan_pretrained_k49_5_s0")
    assert (pretrained.pretrain_classifier_epochs, pretrained.epochs) == (20, 300)
    for name in ("cgan_k49_5_s0", "acgan_ns_k49_5_s0"):  # the study's other variants change one thing each
        other = resolve_experiment(PAPER, name)
        changed = {k for k, v in other.model_dump().items() if v != cfg.model_dump()[k]}
        assert changed == ({"model"} if name.startswith("cgan") else {"loss"}), (name, changed)


def test_the_previous_fc_order_made_every_batch_look_the_same_to_d():
    """Why the fc block's order matters: with BatchNorm1d last before the linear heads (the order
    ganlab ran as "written" before; `d_fc_order: act_bn`), a training-mode D gives every batch the
    same mean real/fake logit (w . beta + b), so it cannot tell a real batch from a generated one.
    The listing's order (BatchNorm1d, then LeakyReLU) does not have that identity."""
    torch.manual_seed(0)
    glyphs = torch.zeros(64, 1, 28, 28).uniform_(-1, -0.9)
    glyphs[:, :, 8:20, 12:16] = 1.0
    noise = torch.rand(64, 1, 28, 28) * 2 - 1
    labels = torch.arange(64) % K
    for name in ("cgan", "acgan"):
        family = nets.FAMILIES[name]
        gaps = {}
        for order in ("act_bn", "bn_act"):
            _, D = family.build(family.Options(fc_width=256, d_width=32, d_fc_order=order), z_dim=8, channels=1,
                                resolution=28, num_classes=K)
            D.train()
            gaps[order] = (D(glyphs, labels).logits.mean() - D(noise, labels).logits.mean()).abs().item()
        # the identity holds to rounding error; the listing's order separates the batches even untrained
        assert gaps["act_bn"] < 1e-6 and gaps["bn_act"] > 1000 * gaps["act_bn"], (name, gaps)
