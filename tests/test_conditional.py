"""cGAN / ACGAN and the dataset classifier on real Kuzushiji-MNIST (the shared test split, 80/20)."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from pipeline.data import prepare as data
from pipeline.core import layout
from pipeline import nets
from pipeline.data import official
from pipeline.evaluate.classifier import class_report, load_classifier
from pipeline.core.config import DatasetConfig, load_params, resolve_experiment
from pipeline.nets.sampling import balanced_labels, generate
from pipeline.train.checkpoint import Architecture
from pipeline.train import step
from pipeline.train.callbacks import FAULT_ENV
from pipeline.train.loop import Trainer
from stages.classifier import classifier
from tests.conftest import REPO_ROOT, study_workspace
from pipeline.core.rundir import RunDir

PARAMS = {
    "profile": "test",
    "profiles": {"test": {"eval_samples": 64, "n_fake": 200, "n_real": 200}},
    "datasets": {
        "kmnist": {"source": "kmnist", "split": "test", "holdout": 0.2},
        "kmnist5": {"source": "kmnist", "split": "test", "classes": 5, "max_images": 640},
    },
    "defaults": {"seed": 1, "batch_size": 64, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 16, "log_every": 2,
                 "eval_every": 100, "device": "cpu", "precision": "fp32"},
    "metrics": {"extractors": ["classifier"], "cheap_extractor": "effnet",
                "classifier": {"epochs": 8, "width": 16, "batch_size": 64, "lr": 3e-3}},
    "experiments": {
        "acgan": {"study": "acgan_classes", "model": "acgan", "dataset": "kmnist5", "loss": "minimax", "epochs": 2,
                  "z_mean": 0.5, "label_noise": {"real": [0.7, 1.2], "fake": [0.0, 0.3]},
                  "pretrain_classifier_epochs": 2, "model_args": {"g_width": 32, "d_width": 16, "fc_width": 64}},
    },
}
STEPS_PER_EPOCH = 640 // 64


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Prepared KMNIST (10 classes, 8,000 / 2,000) and a 5-class slice, plus the trained classifier."""
    root = tmp_path_factory.mktemp("kmnist")
    with study_workspace(root, PARAMS) as params:
        report = classifier("kmnist", params)
    return root, report


def test_class_subset_reindexes_labels(workspace):
    root, _ = workspace
    five = data.load_prepared(root / "data/prepared/kmnist5")
    assert five.classes == ["お", "き", "す", "つ", "な"]
    assert sorted(five.labels.unique().tolist()) == [0, 1, 2, 3, 4] and len(five.images) == 640
    assert five.test_images is None
    full = data.load_prepared(root / "data/prepared/kmnist")
    # the same glyph keeps its label when the classes are the first five of the map
    assert set(five.meta["class_counts"]) and full.classes[:5] == five.classes


def test_explicit_class_list_is_reindexed_in_the_given_order(tmp_path):
    meta = data.prepare_dataset(DatasetConfig(source="kmnist", split="test", classes=[9, 0]), tmp_path / "two")
    two = data.load_prepared(tmp_path / "two")
    original = official.ARRAY_SOURCES["kmnist"].load("test")[1]
    assert meta["classes"] == ["を", "お"] and meta["class_counts"] == [int((original == 9).sum()), int((original == 0).sum())]
    assert len(two.images) == 2000 and set(two.labels.tolist()) == {0, 1}


def test_classifier_accuracy_on_real_kmnist(workspace):
    _, report = workspace
    print(f"KMNIST classifier (width 16, 8 epochs, 8,000 train images): accuracy {report['accuracy']:.4f}, "
          f"balanced {report['balanced_accuracy']:.4f} on {report['num_test_images']} held-out images")
    assert report["num_train_images"] == 8000 and report["num_test_images"] == 2000
    assert report["accuracy"] > 0.92


def test_conditional_accuracy_follows_the_requested_labels(workspace):
    """Real held-out images stand in for a generator: with their own labels requested they score
    high; with the labels shuffled or shifted by one class, at or below chance; a 'generator' that
    always draws one class scores 1/K whatever is requested, and covers one class."""
    root, _ = workspace
    model, _ = load_classifier(root / "models/classifier/kmnist.pt")
    held_out = data.load_prepared(root / "data/prepared/kmnist")
    images, labels = held_out.test_images, held_out.test_labels
    own = class_report(model, images, labels, 10)
    assert own["cond_acc"] > 0.9 and own["classes_covered"] == 10 and own["class_entropy_norm"] > 0.98
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert abs(class_report(model, images, shuffled, 10)["cond_acc"] - 0.1) < 0.03
    assert class_report(model, images, (labels + 1) % 10, 10)["cond_acc"] < 0.05  # labels off by one class
    only_3 = images[labels == 3][:200]
    one_class = class_report(model, only_3, balanced_labels(len(only_3), 10), 10)
    assert one_class["classes_covered"] == 1 and abs(one_class["cond_acc"] - 0.1) < 0.02


def test_confidence_tells_clear_glyphs_from_blends(workspace):
    """Real glyphs: the classifier is sure of every class; each real glyph blended half-and-half
    with one of another class: it hesitates, and no class stays confident; one class only: at most
    one confident class."""
    root, _ = workspace
    model, _ = load_classifier(root / "models/classifier/kmnist.pt")
    held_out = data.load_prepared(root / "data/prepared/kmnist")
    images, labels = held_out.test_images, held_out.test_labels
    real = class_report(model, images, None, 10)
    print(f"KMNIST classifier on real held-out glyphs: confidence {real['confidence']:.3f}, "
          f"{real['confident_classes']} confident classes")
    assert real["confidence"] > 0.9 and real["confident_classes"] >= 7  # a 0.93-accurate classifier hesitates on some
    by_class = labels.argsort()  # paired with the image half the sorted set away: another class
    partner = by_class.roll(len(by_class) // 2)
    assert (labels[by_class] != labels[partner]).all()
    blends = ((images[by_class].float() + images[partner].float()) / 2).round().to(torch.uint8)
    blended = class_report(model, blends, None, 10)
    print(f"blends: confidence {blended['confidence']:.3f}, {blended['confident_classes']} confident classes")
    assert blended["confidence"] < real["confidence"] - 0.1 and blended["confident_classes"] <= 2
    assert class_report(model, images[labels == 3], None, 10)["confident_classes"] <= 1


def test_untrained_generator_is_at_chance(workspace):
    root, _ = workspace
    model, _ = load_classifier(root / "models/classifier/kmnist.pt")
    params = load_params(root / "params.yaml")
    cfg = resolve_experiment(params, "acgan")
    G, _ = Architecture.of(cfg, 1, 28, 10).build(seed=cfg.seed)
    requested = balanced_labels(2000, 10)
    fake = generate(G, 2000, cfg, seed=0, device="cpu", labels=requested)
    report = class_report(model, fake, requested, 10)
    print(f"untrained acgan G: conditional accuracy {report['cond_acc']:.3f} (chance 0.1), "
          f"classes covered {report['classes_covered']}")
    assert abs(report["cond_acc"] - 0.1) < 0.07


def test_nets_use_the_labels():
    torch.manual_seed(0)
    for name in ("cgan", "acgan"):
        family = nets.FAMILIES[name]
        G, D = family.build(family.Options(fc_width=64), z_dim=8, channels=1, resolution=28, num_classes=5)
        G.eval(), D.eval()
        z = torch.randn(4, 8)
        a, b = G(z, torch.tensor([0, 0, 0, 0])), G(z, torch.tensor([1, 2, 3, 4]))
        assert a.shape == (4, 1, 28, 28) and not torch.allclose(a, b)
        out = D(a, torch.tensor([0, 1, 2, 3]))
        assert out.logits.shape == (4,)
        if family.class_head:
            assert out.class_logits.shape == (4, 5)
            assert torch.equal(D(a, torch.tensor([4, 4, 4, 4])).logits, out.logits)  # ACGAN's D never sees y
        else:
            assert out.class_logits is None
            assert not torch.equal(D(a, torch.tensor([4, 4, 4, 4])).logits, out.logits)  # cGAN's D does


@pytest.mark.parametrize("fake_labels", ["batch", "uniform"])
def test_generator_labels_follow_the_real_batch_unless_uniform_is_asked(workspace, fake_labels, monkeypatch):
    """The ACGAN write-up generates G(z, y) with the real batch's labels: on an imbalanced set the
    generated images then follow its label distribution; `uniform` draws them evenly instead."""
    root, _ = workspace
    params = load_params(root / "params.yaml")
    cfg = resolve_experiment(params, "acgan").model_copy(update={"fake_labels": fake_labels})
    monkeypatch.chdir(root)
    trainer = Trainer("acgan", cfg, data.load_prepared(layout.prepared_dir("kmnist5")), RunDir.of("labels"),
                      metrics_cfg=params.metrics)
    x = step.inputs(trainer.images[:64])
    skewed = torch.tensor([3] * 60 + [0, 1, 2, 4])  # an imbalanced batch
    _, y_fake, _ = step.d_update(trainer.nets, trainer.terms, trainer.settings, x, skewed)
    if fake_labels == "batch":
        assert torch.equal(y_fake, skewed)
    else:
        assert (y_fake == 3).sum() < 30 and len(y_fake.unique()) == 5


def test_layer_orders_follow_the_write_ups():
    """Seed 003's MLP G: Linear -> LeakyReLU -> BatchNorm; seed 000's conditional D: conv block
    LeakyReLU -> BatchNorm2d, fc block BatchNorm1d -> LeakyReLU (tests/test_conformance_000_*
    checks the whole D). Each block's order is its own option; the usual order stays one."""
    def kinds(module):
        return [type(m).__name__ for m in module if not isinstance(m, (torch.nn.Dropout, torch.nn.Flatten))]

    G, _ = nets.FAMILIES["mlp"].build(nets.FAMILIES["mlp"].Options(), z_dim=8, channels=1, resolution=28)
    assert kinds(G.net)[:3] == ["Linear", "LeakyReLU", "BatchNorm1d"]
    G, _ = nets.FAMILIES["mlp"].build(nets.FAMILIES["mlp"].Options(bn_after_activation=False), z_dim=8,
                                      channels=1, resolution=28)
    assert kinds(G.net)[:3] == ["Linear", "BatchNorm1d", "LeakyReLU"]
    orders = {(): ["LeakyReLU", "BatchNorm2d", "Linear", "BatchNorm1d", "LeakyReLU"],
              (("d_conv_order", "bn_act"),): ["BatchNorm2d", "LeakyReLU", "Linear", "BatchNorm1d", "LeakyReLU"],
              (("d_fc_order", "act_bn"),): ["LeakyReLU", "BatchNorm2d", "Linear", "LeakyReLU", "BatchNorm1d"]}
    for name in ("cgan", "acgan"):
        family = nets.FAMILIES[name]
        for options, tail in orders.items():
            _, D = family.build(family.Options(fc_width=64, **dict(options)), z_dim=8, channels=1, resolution=28,
                                num_classes=5)
            assert kinds(D.trunk.net) == ["Conv2d", "LeakyReLU", "Conv2d", *tail], (name, options)


def test_mlp_d_dropout_is_off_by_default_and_active_only_in_training():
    """`d_dropout` (the cpu control's D) must randomise D's output in training mode and nowhere
    else; at 0 D keeps the layer indices older checkpoints were saved with."""
    family = nets.FAMILIES["mlp"]
    x = torch.randn(16, 1, 28, 28)
    _, plain = family.build(family.Options(), z_dim=8, channels=1, resolution=28)
    _, dropped = family.build(family.Options(d_dropout=0.5), z_dim=8, channels=1, resolution=28)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    assert [k.split(".")[1] for k in plain.state_dict()][::2] == ["0", "2", "4", "6"]
    plain.train(), dropped.train()
    assert torch.equal(plain(x).logits, plain(x).logits)
    assert not torch.equal(dropped(x).logits, dropped(x).logits)
    dropped.eval()
    assert torch.equal(dropped(x).logits, dropped(x).logits)
    with pytest.raises(ValueError):
        family.Options(d_dropout=1.0)


def test_pretraining_teaches_the_class_head(workspace, monkeypatch):
    root, _ = workspace
    monkeypatch.chdir(root)
    params = load_params()
    cfg = resolve_experiment(params, "acgan").model_copy(update={"lr_d": 1e-3})
    prepared = data.load_prepared(layout.prepared_dir("kmnist5"))
    trainer = Trainer("acgan-direct", cfg, prepared, RunDir(root / "runs" / "acgan-direct"), metrics_cfg=params.metrics)
    x, y = trainer.images[:256], trainer.labels[:256]
    before = float((predict_head(trainer, x) == y).float().mean())
    for _ in range(3):  # three passes over the 640 images
        for idx in torch.randperm(len(trainer.images), generator=torch.Generator().manual_seed(0)).split(64):
            stats = step.pretrain_step(trainer.nets, trainer.settings, trainer.images[idx], trainer.labels[idx])
            loss, acc = stats.tolist()
    after = float((predict_head(trainer, x) == y).float().mean())
    print(f"D class head accuracy on real images: {before:.3f} before, {after:.3f} after 30 pre-training steps")
    assert before < 0.4 and after > 0.8


def predict_head(trainer, x):
    """D's class prediction as D computes it during training (batch statistics in BatchNorm)."""
    with torch.no_grad():
        return trainer.nets.D(step.inputs(x)).class_logits.argmax(1)


def test_killed_during_pretraining_resumes_to_identical_weights(workspace, tmp_path_factory):
    root, _ = workspace
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}

    def train(cwd, **extra):
        return subprocess.run([sys.executable, "-m", "stages.train", "acgan"], cwd=cwd, env={**env, **extra},
                              capture_output=True, text=True, timeout=600)

    killed = train(root, **{FAULT_ENV: str(STEPS_PER_EPOCH + 3)})  # in pre-training epoch 2 of 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = train(root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after pre-training epoch 1" in resumed.stderr
    run = root / "runs" / "acgan"
    steps = (run / "steps.csv").read_text().splitlines()
    assert steps[0].split(",")[-3:] == ["cls_real", "cls_fake", "cls_ratio"]
    assert len(steps) == 1 + 2 * STEPS_PER_EPOCH // 2  # GAN steps only, every 2nd
    import PIL.Image

    # one row per class (5) and 8 columns of 28 px images, torchvision's 2 px padding
    assert PIL.Image.open(run / "samples" / "epoch_0002.png").size == (8 * 30 + 2, 5 * 30 + 2)

    clean = tmp_path_factory.mktemp("clean")
    for name in ("params.yaml", "data"):
        os.symlink(root / name, clean / name)
    uninterrupted = train(clean)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    a = torch.load(root / "runs/acgan/checkpoints/last.pt", weights_only=False)
    b = torch.load(clean / "runs/acgan/checkpoints/last.pt", weights_only=False)
    for part in ("G", "D"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


def test_conditional_d_without_batchnorm():
    """`d_norm: none` removes every BatchNorm from both conditional Ds (the MNIST controls train
    with it), and only then may a gradient-penalty loss use them."""
    for name in ("cgan", "acgan"):
        family = nets.FAMILIES[name]
        _, D = family.build(family.Options(fc_width=64, d_norm="none"), z_dim=8, channels=1, resolution=28,
                            num_classes=5)
        assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in D.modules())
        assert not family.batchnorm_in_d({"d_norm": "none"}) and family.batchnorm_in_d({})
