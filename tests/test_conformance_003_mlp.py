"""Conformance of the "as written" MNIST MLP GAN with write-up 003's TensorFlow listing.

The specification is the listing in the write-up (seed 003_e560794f3b55e0ea.txt); every expected
value below is transcribed from it, with the listing's line numbers ("l.51") and code quoted.
Our nets are built from the experiments that claim to be the write-up's: the generator-loss
study's `mlp_mnist_*` entries of studies/paper.yaml (the write-up's scale), studies/cpu.yaml and
params.yaml. They share one YAML anchor: the same nets and recipe, the G loss being the study's
variable. The write-up's own G loss is the non-saturating one (l.116), so its own run is
`mlp_mnist_non_saturating_s0` of studies/paper.yaml.

Where ganlab differs on purpose, docs/deviations.md says so and the test below names the row.
Where a difference is not matched yet, the test asserts the listing's fact and is marked
xfail(strict=True) with the difference as its reason (also listed in docs/deviations.md): matching
it turns the test into a plain pass.

What the listing does NOT state (so docs can say so): the body of `batch_norm(...)` (l.52: its
epsilon, whether it keeps running statistics and their momentum, and what `is_train=False` does);
Adam's beta2 and epsilon (l.123, l.125 rely on TF's AdamOptimizer defaults 0.999 / 1e-8); the
preprocessing of `dataset.train.images` (l.239; TF's MNIST reader gives floats in [0, 1]); the
formulas of the two objectives (l.17-27 refer to images that are not in the text; the code,
l.112-118, is what is transcribed here).
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from pipeline.core import registry
from pipeline import nets
from pipeline.core.config import load_params, resolve_dataset, resolve_experiment
from pipeline.data.prepare import dataset_shape
from pipeline.nets.sampling import sample_z
from tests.conformance import init_stats, layers_run
from tests.conftest import REPO_ROOT

PAPER = "studies/paper.yaml"
WRITE_UPS_OWN_RUN = "mlp_mnist_non_saturating_s0"  # l.116: G's loss is BCE(D(G(z)), 1), the non-saturating loss

# ----- the listing, transcribed ------------------------------------------------------------------
# Generator.run, l.49-58 (weight shapes from __init__, l.34-41):
LISTING_G = [
    # l.51  h1 = tf.nn.leaky_relu(tf.nn.xw_plus_b(z, self.gen_w1, self.gen_b1), alpha=0.2)   gen_w1: [100, 256] (l.34)
    ("Linear", 100, 256, True), ("LeakyReLU", 0.2),
    # l.52  h1 = batch_norm(h1, self.gen_scale_w1, self.gen_offset_w1, [0], is_train, ...)   after the activation
    ("BatchNorm1d", 256),
    # l.53  h2 = tf.nn.leaky_relu(tf.nn.xw_plus_b(h1, self.gen_w2, self.gen_b2), alpha=0.2)  gen_w2: [256, 512] (l.36)
    ("Linear", 256, 512, True), ("LeakyReLU", 0.2),
    # l.54  h2 = batch_norm(h2, self.gen_scale_w2, self.gen_offset_w2, [0], is_train, ...)
    ("BatchNorm1d", 512),
    # l.55  h3 = tf.nn.leaky_relu(tf.nn.xw_plus_b(h2, self.gen_w3, self.gen_b3), alpha=0.2)  gen_w3: [512, 1024] (l.38)
    ("Linear", 512, 1024, True), ("LeakyReLU", 0.2),
    # l.56  h3 = batch_norm(h3, self.gen_scale_w3, self.gen_offset_w3, [0], is_train, ...)
    ("BatchNorm1d", 1024),
    # l.57  h3_drop = tf.nn.dropout(h3, self.keep_prob)   keep_prob 0.5 in G's step (l.194): drop rate 1 - 0.5
    ("Dropout", 0.5),
    # l.58  fc = tf.nn.sigmoid(tf.nn.xw_plus_b(h3_drop, self.gen_w4, self.gen_b4))          gen_w4: [1024, 28*28] (l.40)
    ("Linear", 1024, 784, True), ("Sigmoid",),
]

# Discrimitor.run, l.78-84 (weight shapes from __init__, l.70-77); l.85: "Discrimitorにはバッチ正規化を適用しない"
# (no batch norm in D); no dropout in D either.
LISTING_D = [
    # l.80  h1 = tf.nn.leaky_relu(tf.nn.xw_plus_b(x, self.dis_w1, self.dis_b1), alpha=0.2)   dis_w1: [28*28, 1024] (l.70)
    ("Linear", 784, 1024, True), ("LeakyReLU", 0.2),
    # l.81  h2 = tf.nn.leaky_relu(tf.nn.xw_plus_b(h1, self.dis_w2, self.dis_b2), alpha=0.2)  dis_w2: [1024, 512] (l.72)
    ("Linear", 1024, 512, True), ("LeakyReLU", 0.2),
    # l.82  h3 = tf.nn.leaky_relu(tf.nn.xw_plus_b(h2, self.dis_w3, self.dis_b3), alpha=0.2)  dis_w3: [512, 256] (l.74)
    ("Linear", 512, 256, True), ("LeakyReLU", 0.2),
    # l.83  fc = tf.nn.sigmoid(tf.nn.xw_plus_b(h3, self.dis_w4, self.dis_b4))                dis_w4: [256, 1] (l.76)
    ("Linear", 256, 1, True), ("Sigmoid",),
]

# Every weight and bias: tf.truncated_normal(shape, stddev=0.02) (l.34-41, l.70-77); TF truncates at
# two standard deviations, so values lie in [-0.04, 0.04] with std 0.02 * 0.8796 = 0.01759 and
# P(|v| < 0.02) = 0.6827 / 0.9545 = 0.7152.
TRUNC_STD, TRUNC_BOUND, TRUNC_STD_REALISED, TRUNC_P_WITHIN_1SD = 0.02, 0.04, 0.01759, 0.7152


# ----- our side ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _params(path: str):
    return load_params(REPO_ROOT / path)


def _mlp_generator_loss_experiments() -> list[tuple[str, str]]:
    """(params file, experiment) of every generator-loss MLP experiment: each claims the write-up's net and recipe."""
    found = []
    for path in (PAPER, "studies/cpu.yaml", "params.yaml"):
        params = _params(path)
        for name in params.experiments:
            cfg = resolve_experiment(params, name)
            if cfg.model == "mlp" and cfg.study == "generator_loss":
                found.append((path, name))
    return found


AS_WRITTEN = _mlp_generator_loss_experiments()
PAPER_AS_WRITTEN = [name for path, name in AS_WRITTEN if path == PAPER]


def _cfg(path: str, name: str):
    return resolve_experiment(_params(path), name)


def _build(path: str, name: str):
    """(cfg, G, D) as the trainer builds them (pipeline.train.checkpoint.Architecture.build)."""
    params, cfg = _params(path), _cfg(path, name)
    channels, resolution = dataset_shape(resolve_dataset(params, cfg.dataset))
    family = nets.FAMILIES[cfg.model]
    torch.manual_seed(0)
    G, D = family.build(family.Options(**cfg.model_args), z_dim=cfg.z_dim, channels=channels,
                        resolution=resolution, num_classes=0)
    return cfg, G, D


def _g_layers(path: str, name: str) -> list[tuple]:
    cfg, G, _ = _build(path, name)
    return layers_run(G, torch.rand(4, cfg.z_dim) * 2 - 1)  # batch of 4: BatchNorm in training mode


def _d_layers(path: str, name: str) -> list[tuple]:
    _, _, D = _build(path, name)
    return layers_run(D, torch.rand(4, 1, 28, 28) * 2 - 1)


def test_the_study_files_hold_the_write_ups_experiments():
    assert WRITE_UPS_OWN_RUN in PAPER_AS_WRITTEN
    assert {path for path, _ in AS_WRITTEN} == {PAPER, "studies/cpu.yaml", "params.yaml"}


# ----- networks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_generator_layers_are_the_listings(path, name):
    ours = _g_layers(path, name)
    # The listing's layers, in its order, up to its output activation. The output activation is the
    # one difference: the listing ends in a sigmoid (l.58, images in [0, 1]), ours in tanh (images in
    # [-1, 1]; docs/deviations.md), asserted as the listing has it in the xfail test below and
    # pinned here as what we run, so that any other change to it fails too.
    assert ours == LISTING_G[:-1] + [("Tanh",)]


@pytest.mark.xfail(strict=True, reason=(
    "deviation, listed in docs/deviations.md: the listing's G ends in a sigmoid (l.58 `fc = tf.nn.sigmoid(tf.nn.xw_plus_b(h3_drop, ...))`, "
    "MNIST in [0, 1], samples saved as `* 255.` at l.224); pipeline/nets/mlp.py's Generator ends in nn.Tanh() "
    "with data in [-1, 1] (pipeline.nets.sampling.to_unit_range)"))
def test_generator_output_activation_is_the_listings():
    assert _g_layers(PAPER, WRITE_UPS_OWN_RUN)[-1] == LISTING_G[-1]


@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_discriminator_layers_are_the_listings(path, name):
    # docs/deviations.md, "The write-ups' own code", row 003: "D returns logits; every loss is written
    # once, from logits" (the listing applies a sigmoid at l.83 and then again inside
    # sigmoid_cross_entropy_with_logits at l.112-116). So the listing's final Sigmoid is dropped here
    # and the loss tests below apply the sigmoid once, inside the loss.
    assert LISTING_D[-1] == ("Sigmoid",)
    assert _d_layers(path, name) == LISTING_D[:-1]


@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_discriminator_has_no_batchnorm(path, name):
    # l.85: "Discrimitorにはバッチ正規化を適用しない" (no batch norm in D); the family says so to the config checks
    cfg = _cfg(path, name)
    assert nets.FAMILIES[cfg.model].batchnorm_in_d(cfg.model_args) is False


def test_generator_batchnorm_starts_as_the_listings():
    _, G, _ = _build(PAPER, WRITE_UPS_OWN_RUN)
    bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [bn.num_features for bn in bns] == [256, 512, 1024]
    for bn in bns:
        # l.42-47: gen_scale_w* = tf.Variable(tf.ones([n])), gen_offset_w* = tf.Variable(tf.zeros([n])), both trained
        assert bn.affine and bn.weight.requires_grad and bn.bias.requires_grad
        assert torch.equal(bn.weight.detach(), torch.ones(bn.num_features))
        assert torch.equal(bn.bias.detach(), torch.zeros(bn.num_features))
    # l.52: batch_norm(h, ..., [0], ...): moments over axis 0, the batch: BatchNorm1d on (N, features) does that
    x = torch.randn(8, 256) * 3 + 5
    out = bns[0].train()(x)
    assert torch.allclose(out.mean(0), torch.zeros(256), atol=1e-5)


def _truncated_normal_problems(net: nn.Module) -> list[str]:
    """Where the Linear layers' weights and biases do not look drawn from truncated_normal(stddev=0.02)."""
    problems = []
    pooled = []
    stats = init_stats(net, nn.Linear)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for i, (layer, (w_mean, w_std, _b_mean, b_std)) in enumerate(zip(layers, stats)):
        w, b = layer.weight.detach().flatten(), layer.bias.detach().flatten()
        pooled += [w, b]
        tol = max(0.03, 3 / w.numel() ** 0.5)
        if not abs(w_std - TRUNC_STD_REALISED) <= tol * TRUNC_STD_REALISED:
            problems.append(f"layer {i}: weight std {w_std:.4f}, truncated_normal(0.02) gives {TRUNC_STD_REALISED}")
        if abs(w_mean) > 0.002:
            problems.append(f"layer {i}: weight mean {w_mean:.4f}")
        if torch.cat([w, b]).abs().max() > TRUNC_BOUND + 1e-6:
            problems.append(f"layer {i}: a weight or bias beyond the truncation at 2 x 0.02")
        if b.numel() >= 256 and not abs(b_std - TRUNC_STD_REALISED) <= max(0.03, 3 / b.numel() ** 0.5) * TRUNC_STD_REALISED:
            problems.append(f"layer {i}: bias std {b_std:.4f} (the listing draws biases like weights)")
    within = (torch.cat(pooled).abs() < TRUNC_STD).float().mean().item()
    if abs(within - TRUNC_P_WITHIN_1SD) > 0.01:
        problems.append(f"share of |v| < 0.02: {within:.4f}, truncated_normal(0.02) gives {TRUNC_P_WITHIN_1SD}")
    return problems


def test_the_initialisation_check_tells_truncated_normal_from_pytorchs_default():
    """The xfail test below is only as good as its check: it must accept the listing's init and reject others."""
    torch.manual_seed(0)
    listing = nn.Sequential(nn.Linear(100, 256), nn.Linear(256, 512), nn.Linear(512, 1024), nn.Linear(1024, 784))
    for layer in listing:
        nn.init.trunc_normal_(layer.weight, 0.0, TRUNC_STD, -TRUNC_BOUND, TRUNC_BOUND)
        nn.init.trunc_normal_(layer.bias, 0.0, TRUNC_STD, -TRUNC_BOUND, TRUNC_BOUND)
    assert _truncated_normal_problems(listing) == []
    default = nn.Sequential(nn.Linear(1024, 512), nn.Linear(1024, 784))  # fan-in 1024: std 0.018, close to 0.0176
    assert _truncated_normal_problems(default)
    plain = nn.Sequential(nn.Linear(512, 1024))
    nn.init.normal_(plain[0].weight, 0.0, TRUNC_STD)  # N(0, 0.02) untruncated: not the listing's either
    nn.init.zeros_(plain[0].bias)
    assert _truncated_normal_problems(plain)


@pytest.mark.xfail(strict=True, reason=(
    "deviation, listed in docs/deviations.md: the listing draws every weight and bias from tf.truncated_normal(stddev=0.02) (l.34-41, "
    "l.70-77); pipeline/nets/mlp.py applies no initialisation (PyTorch's default nn.Linear init, "
    "U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases)"))
@pytest.mark.parametrize("net", ["G", "D"])
def test_initialisation_is_the_listings(net):
    _, G, D = _build(PAPER, WRITE_UPS_OWN_RUN)
    assert _truncated_normal_problems({"G": G, "D": D}[net]) == []


# ----- recipe ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_latent_is_100_dims_uniform_on_minus_1_1(path, name):
    cfg = _cfg(path, name)
    # l.10-11: 100次元ベクトルで、閉区間[-1,1]の一様分布; l.103: tf.placeholder(tf.float32, shape=(None,100));
    # l.181, l.191: noise_z = np.random.uniform(-1,1, size=[batch_size, 100])
    assert (cfg.z_dim, cfg.z_dist, cfg.z_mean) == (100, "uniform", 0.0)
    z = sample_z(20_000, cfg, device="cpu", generator=torch.Generator().manual_seed(0))
    assert z.shape == (20_000, 100)
    assert z.min() >= -1 and z.max() <= 1
    assert abs(z.mean().item()) < 0.005 and abs(z.var().item() - 1 / 3) < 0.005  # U(-1, 1): mean 0, variance 1/3
    assert abs((z < -0.5).float().mean().item() - 0.25) < 0.005


@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_batch_size_and_adam(path, name):
    cfg = _cfg(path, name)
    # l.138 `batch_size = 100`, l.243 `batch_size=100`
    assert cfg.batch_size == 100
    # l.123 tf.train.AdamOptimizer(0.0002, beta1=0.1) for D; l.125 tf.train.AdamOptimizer(0.0002, beta1=0.5) for G.
    # beta2 is not in the listing: TF's default 0.999 (as is epsilon, 1e-8, torch's default too; the
    # trainer passes none, pipeline/train/loop.py builds torch.optim.Adam(lr=..., betas=...)).
    assert (cfg.lr_d, cfg.betas_d) == (0.0002, (0.1, 0.999))
    assert (cfg.lr_g, cfg.betas_g) == (0.0002, (0.5, 0.999))


@pytest.mark.parametrize("path,name", AS_WRITTEN)
def test_training_step_schedule(path, name):
    cfg = _cfg(path, name)
    # l.177-195: every batch, one D update then one G update (`if k % 1 == 0`)
    assert (cfg.n_critic or registry.LOSSES[cfg.loss].n_critic) == 1
    # l.170-171: D's targets are np.ones / np.zeros: no label noise or smoothing
    assert cfg.label_noise is None
    # l.182-187: D's step feeds is_train False and keep_prob 1.0 (G's dropout off); l.191-195: G's step
    # draws fresh noise with is_train True and keep_prob 0.5. ganlab: `d_step_inference_mode` (G makes
    # D's batch in inference mode, then re-generates from new latents in training mode for its own
    # step). What is_train=False does inside batch_norm is not in the listing (its body is not shown).
    assert cfg.d_step_inference_mode is True
    # nothing else: no EMA of G, no augmentation, no feature matching, no class head
    assert cfg.ema_decay is None and cfg.augment is None and cfg.feature_matching is None
    assert not nets.FAMILIES[cfg.model].class_head


def _tf_sigmoid_cross_entropy_with_logits(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """tf.nn.sigmoid_cross_entropy_with_logits as TF documents it: max(x, 0) - x * z + log(1 + exp(-|x|))."""
    x, z = logits, labels
    return x.clamp(min=0) - x * z + torch.log1p(torch.exp(-x.abs()))


def test_losses_are_the_listings():
    cfg = _cfg(PAPER, WRITE_UPS_OWN_RUN)
    loss = registry.LOSSES[cfg.loss]
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(100, generator=gen) * 3, torch.randn(100, generator=gen) * 3  # D's outputs, one per image
    ones, zeros = torch.ones(100), torch.zeros(100)
    # docs/deviations.md, "The write-ups' own code", row 003: the listing feeds D's sigmoid output to a
    # loss that applies a sigmoid again (logits=input_X at l.112); ganlab's D returns logits and the
    # loss applies the sigmoid once. So the listing's formulas are evaluated on D's logits here.
    # l.112 dis_entropy_X = sigmoid_cross_entropy_with_logits(labels=label_t1, logits=input_X)
    # l.113 dis_entropy_G = sigmoid_cross_entropy_with_logits(labels=label_t0, logits=generated_X)
    # l.115 dis_loss = tf.reduce_mean(dis_entropy_X + dis_entropy_G)
    listing_d = (_tf_sigmoid_cross_entropy_with_logits(ones, real) + _tf_sigmoid_cross_entropy_with_logits(zeros, fake)).mean()
    # l.116 gen_entropy = sigmoid_cross_entropy_with_logits(labels=label_t1, logits=generated_X)
    # l.118 gen_loss = tf.reduce_mean(gen_entropy)
    listing_g = _tf_sigmoid_cross_entropy_with_logits(ones, fake).mean()
    assert torch.allclose(loss.d_loss(real, fake), listing_d, rtol=1e-6, atol=1e-6)
    assert torch.allclose(loss.g_loss(fake), listing_g, rtol=1e-6, atol=1e-6)


# ----- scale (the write-up's: studies/paper.yaml only) -------------------------------------------
def test_epochs_are_the_listings():
    assert {name: _cfg(PAPER, name).epochs for name in PAPER_AS_WRITTEN} == {name: 71 for name in PAPER_AS_WRITTEN}


MNIST_TRAIN_IMAGES = 60_000  # the official MNIST training split


@pytest.mark.xfail(strict=True, reason=(
    "deviation, listed in docs/deviations.md: the write-up trains on 'MNISTの全訓練データ(55000件)' (l.251; `dataset.train.images`, l.239: "
    "TF's MNIST reader holds 5,000 of the 60,000 training images out for validation); studies/paper.yaml's "
    "mnist dataset is the whole official training split (60,000), and studies/cpu.yaml's generator-loss study "
    "counts the write-up's updates as 42,000 (70 x 600) where the listing makes 71 x 550 = 39,050"))
def test_training_set_is_the_listings():
    params, cfg = _params(PAPER), _cfg(PAPER, WRITE_UPS_OWN_RUN)
    ds = resolve_dataset(params, cfg.dataset)
    assert (ds.source, ds.split) == ("mnist", "train")  # l.239: dataset.train.images
    count = round(MNIST_TRAIN_IMAGES * (1 - ds.holdout))
    count = min(c for c in (count, ds.max_images, cfg.max_train_images) if c is not None)
    assert count == 55_000


def test_training_set_is_mnists_training_split():
    """The part of the data fact that holds: MNIST's training images (l.239), 28 x 28, one channel (l.107: 28*28)."""
    params, cfg = _params(PAPER), _cfg(PAPER, WRITE_UPS_OWN_RUN)
    ds = resolve_dataset(params, cfg.dataset)
    assert (ds.source, ds.split, ds.classes) == ("mnist", "train", None)
    assert dataset_shape(ds) == (1, 28)


def test_precision_is_the_listings():
    assert _cfg(PAPER, WRITE_UPS_OWN_RUN).precision == "fp32"
