"""Improved-GAN techniques: minibatch discrimination, feature matching, the semi-supervised K+1
discriminator (hand computations), the near-duplicate rate, and a semi-supervised run on real
Fashion-MNIST with its supervised-only baseline."""
import dataclasses
import math

import pytest
import torch

from pipeline.data import prepare as data
from pipeline.core import layout
from pipeline.train.checkpoint import load_checkpoint
from pipeline.core.config import resolve_experiment
from pipeline.evaluate.run import semi_supervised_accuracy
from pipeline.core.registry import LOSSES
from pipeline.evaluate.metrics import near_duplicate_rate
from pipeline.nets import dcgan
from pipeline.train.terms import GStep, KPlus1
from pipeline.train.terms.k_plus_1 import labelled_subset
from pipeline.train import step
from pipeline.train.loop import Trainer
from tests.conftest import study_workspace
from pipeline.core.rundir import RunDir


def test_minibatch_discrimination_hand_computed():
    layer = dcgan.MinibatchDiscrimination(2, b=1, c=2)
    with torch.no_grad():
        layer.T.copy_(torch.eye(2))  # M = f
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    out = layer(f)
    e = math.exp
    # L1 distances: |f0 - f1| = 1, |f0 - f2| = 3, |f1 - f2| = 4; each row also meets itself (exp(0) = 1)
    expected = torch.tensor([1 + e(-1) + e(-3), e(-1) + 1 + e(-4), e(-3) + e(-4) + 1])
    torch.testing.assert_close(out[:, :2], f)
    torch.testing.assert_close(out[:, 2], expected)


def test_k_plus_1_losses_hand_computed():
    opts = dcgan.Options(ndf=8, head="k_plus_1")
    _, D = dcgan.build(opts, z_dim=4, channels=1, resolution=28, num_classes=3)
    out = D(torch.randn(5, 1, 28, 28))
    torch.testing.assert_close(out.logits, torch.logsumexp(out.class_logits, 1))
    # D(x) = Z / (Z + 1) with Z = sum_k exp(l_k): the "generated" class has logit 0.
    real_l = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    fake_l = torch.tensor([[-2.0, -1.0, 0.5]], dtype=torch.float64)
    z_real, z_fake = math.exp(1) + 1 + math.exp(-1), math.exp(-2) + math.exp(-1) + math.exp(0.5)
    unsupervised = -math.log(z_real / (z_real + 1)) - math.log(1 / (z_fake + 1))
    ours = LOSSES["non_saturating"].d_loss(torch.logsumexp(real_l, 1), torch.logsumexp(fake_l, 1))
    assert ours.item() == pytest.approx(unsupervised, rel=1e-12)
    # supervised part: cross-entropy over the K real classes, label 0
    ce = torch.nn.functional.cross_entropy(real_l, torch.tensor([0]))
    assert ce.item() == pytest.approx(-1.0 + math.log(z_real), rel=1e-12)


def test_near_duplicate_rate_counts_collapse():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    diverse = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    collapsed = torch.cat([diverse[:100], diverse[:100] + 1e-6])  # every sample has a twin
    low, threshold = near_duplicate_rate(diverse, real)
    high, _ = near_duplicate_rate(collapsed, real)
    assert threshold > 0 and low < 0.05 and high == 1.0


def test_labelled_subset_per_class():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    pick = labelled_subset(labels, 5, seed=0)
    assert torch.bincount(labels[pick]).tolist() == [5, 3, 5]
    assert torch.equal(pick, labelled_subset(labels, 5, seed=0)) and not torch.equal(pick, labelled_subset(labels, 5, 1))


PARAMS = {
    "profile": "test",
    "profiles": {"test": {"eval_samples": 32, "n_fake": 64, "n_real": 64}},
    "datasets": {"fm": {"source": "fashion_mnist", "split": "test", "max_images": 640, "holdout": 0.25}},
    "defaults": {"seed": 0, "batch_size": 32, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 16, "device": "cpu",
                 "log_every": 5},
    "metrics": {"extractors": ["effnet"]},
    "experiments": {
        "ssl": {"study": "improved_gan", "model": "dcgan", "dataset": "fm", "loss": "non_saturating", "epochs": 2,
                "labeled_per_class": 10, "model_args": {"ngf": 8, "ndf": 8, "head": "k_plus_1"},
                "feature_matching": {"layer": -1}},
        "mbd": {"study": "improved_gan", "model": "dcgan", "dataset": "fm", "loss": "non_saturating", "epochs": 1,
                "model_args": {"ngf": 8, "ndf": 8, "minibatch_b": 4, "minibatch_c": 3},
                "feature_matching": {"layer": 1, "adversarial": True, "pixel_weight": 1.0}},
    },
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("improved")
    with study_workspace(root, PARAMS) as params:
        yield root, params


def make(params, name):
    return Trainer(name, resolve_experiment(params, name), data.load_prepared(layout.prepared_dir("fm")),
                   RunDir.of(name), metrics_cfg=params.metrics)


def test_feature_matching_is_zero_for_identical_batches(workspace):
    _, params = workspace
    trainer = make(params, "mbd")
    x = step.inputs(trainer.images[:32])
    D = trainer.nets.D

    def g_losses(fake, real):  # every term's part of G's loss, by name
        g_step = GStep(D(fake), fake, None, real, d=D, d_input=lambda images: step.d_input(trainer.terms, images))
        return {name: value for term in trainer.terms for name, value in term.g_loss(g_step).items()}

    with torch.no_grad():
        same = g_losses(x, x)
        other = g_losses(step.inputs(trainer.images[32:64]), x)
    assert same["fm_loss"].item() == 0.0 and same["pixel_loss"].item() == 0.0
    assert other["fm_loss"].item() > 0 and other["pixel_loss"].item() > 0
    assert set(same) == {"loss_adv", "fm_loss", "pixel_loss"}  # adversarial term kept when asked
    stats = trainer.train_step(trainer.images[:32], trainer.labels[:32])
    assert torch.isfinite(stats).all() and "fm_loss" in trainer.stat_names


def test_k_plus_1_d_loss_is_salimans_loss_lab_plus_loss_unl(workspace):
    """Salimans et al.'s code: loss_lab + loss_unl, where loss_unl is half the two BCE terms that our
    adversarial loss sums (see test_k_plus_1_losses_hand_computed): the unlabelled term weighs 0.5."""
    _, params = workspace
    trainer = make(params, "ssl")
    torch.manual_seed(0)
    row = dict(zip(trainer.stat_names, trainer.train_step(trainer.images[:32], trainer.labels[:32]).tolist()))
    assert row["loss_d"] == pytest.approx(row["sup_ce"] + 0.5 * row["loss_unl"], rel=1e-5)
    assert row["loss_unl"] > 0 and row["sup_ce"] > 0


def test_semi_supervised_run_and_its_baseline(workspace):
    root, params = workspace
    trainer = make(params, "ssl")
    (k_plus_1,) = [term for term in trainer.terms if isinstance(term, KPlus1)]
    assert torch.bincount(trainer.labels[k_plus_1.labelled_idx]).tolist() == [10] * 10
    trainer.fit()
    prepared = data.load_prepared(layout.prepared_dir("fm"))
    result = semi_supervised_accuracy(load_checkpoint(root / "runs" / "ssl" / "checkpoints" / "last.pt"), prepared, "cpu")
    print(f"K+1 D accuracy {result['ssl_acc']:.3f}, supervised-only baseline {result['ssl_baseline_acc']:.3f} "
          f"on {len(prepared.test_images)} held-out images, 100 labels")
    assert result["ssl_labelled_images"] == 100
    assert result["ssl_acc"] > 0.3 and result["ssl_baseline_acc"] > 0.3  # both learned (chance: 0.1)
    # measured against the held-out labels: the same predictions scored against shuffled labels fall to chance
    shuffled = dataclasses.replace(prepared, test_labels=prepared.test_labels[torch.randperm(
        len(prepared.test_labels), generator=torch.Generator().manual_seed(0))])
    at_chance = semi_supervised_accuracy(load_checkpoint(root / "runs" / "ssl" / "checkpoints" / "last.pt"), shuffled, "cpu")
    assert abs(at_chance["ssl_acc"] - 0.1) < 0.06 and abs(at_chance["ssl_baseline_acc"] - 0.1) < 0.06
    # and on images neither D saw with a label: no held-out image is among the labelled training images
    labelled = {bytes(img.numpy()) for img in trainer.images[k_plus_1.labelled_idx].cpu()}
    assert not labelled & {bytes(img.numpy()) for img in prepared.test_images}
