"""ProjectedGAN: the frozen projector on real EfficientNet weights, its shapes, frozen-ness and
gradient path, DiffAugment, and EMA, on real icons (the embedded Oxygen icons)."""

import numpy as np
import pytest
import torch

from pipeline.train import augment
from pipeline.data import prepare as data
from pipeline.core import layout
from pipeline.evaluate.backbones import EFFNET_INPUT_SIZE, effnet_preprocess, load_efficientnet_lite
from pipeline.core.config import resolve_experiment
from pipeline.nets import projected
from pipeline.nets.options import PROJECTED_RESOLUTIONS
from pipeline.train import step
from pipeline.train.loop import Trainer
from tests.conftest import ICONS64, study_workspace
from tests.test_metrics import DAISY, find_flower_jpg
from pipeline.core.rundir import RunDir

ICONS = ICONS64 / "apps"


def flower(variant: int) -> torch.Tensor:
    from PIL import Image

    path = find_flower_jpg()
    if path is None:
        pytest.skip("sklearn's flower.jpg not found")
    img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    side = min(img.shape[1:])
    top, left = (img.shape[1] - side) // 2, (img.shape[2] - side) // 2
    return effnet_preprocess(img[None, :, top : top + side, left : left + side].contiguous(), variant)


@pytest.mark.parametrize("variant", [0, 1])
def test_projector_stages_are_the_pretrained_network(variant):
    """The four stages sliced for the projector, continued by the network's own head, still call
    the sklearn flower a daisy: the projector carries the real ImageNet weights, in order."""
    projector = projected.Projector(variant, proj_type=0)
    net = load_efficientnet_lite(variant, with_classifier=True)
    x = flower(variant)
    with torch.no_grad():
        last = projector(x)[-1]
        logits = net.classifier(net.global_pool(net.bn2(net.conv_head(last))))
    assert int(logits.argmax()) == DAISY


@pytest.mark.parametrize("proj_type,channels,sizes", [
    (0, [24, 40, 112, 320], [56, 28, 14, 7]),
    (1, [64, 128, 256, 512], [56, 28, 14, 7]),
    (2, [64, 64, 128, 256], [112, 56, 28, 14]),  # CSM upsamples x2 and halves all but the finest
])
def test_feature_shapes_per_scale(proj_type, channels, sizes):
    """The official projector's output shapes (F_RandomProj with expand): any input resolution is
    resized to 224 px first."""
    projector = projected.Projector(0, proj_type=proj_type)
    assert (projector.channels, projector.sizes) == (channels, sizes)
    for resolution in PROJECTED_RESOLUTIONS:
        x = torch.rand(2, 3, resolution, resolution) * 2 - 1
        with torch.no_grad():
            feats = projector(x)
        assert [tuple(f.shape) for f in feats] == [(2, c, s, s) for c, s in zip(channels, sizes)]
    assert EFFNET_INPUT_SIZE[0] == 224


def test_cross_scale_mixing_runs_from_the_coarsest_level_down():
    """CSM mixes top-down: a change in the coarsest backbone map reaches every output, a change
    in the finest reaches only the finest output."""
    projector = projected.Projector(0, proj_type=2)
    torch.manual_seed(0)
    feats = [torch.randn(1, c, s, s) for c, s in zip([24, 40, 112, 320], [56, 28, 14, 7])]
    with torch.no_grad():
        base = projector.project(feats)
        coarse = projector.project(feats[:3] + [feats[3] + 1])
        fine = projector.project([feats[0] + 1] + feats[1:])
    assert all(not torch.allclose(a, b) for a, b in zip(base, coarse))
    assert not torch.allclose(base[0], fine[0])
    for a, b in zip(base[1:], fine[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("proj_type,blocks,params", [(2, [4, 3, 2, 1], 10_331_328), (1, [3, 2, 1, 0], 7_510_400)])
def test_discriminator_matches_the_official_structure(proj_type, blocks, params):
    """Per-level discriminators as in the official MultiScaleD: down-blocks from the nominal size
    (4 / 3 / 2 / 1 on CSM maps), widening to 512; with CSM 10.33 M trainable parameters, the
    official count on the same projector. Every level ends in a 4 x 4 map of logits."""
    D = projected.ProjectedDiscriminator(projected.Options(proj_type=proj_type))
    assert [sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) for d in D.discs] == blocks
    assert sum(p.numel() for p in D.parameters() if p.requires_grad) == params
    with torch.no_grad():
        assert D(torch.rand(3, 3, 64, 64) * 2 - 1).logits.shape == (3, 4 * 16)
    lighter = projected.ProjectedDiscriminator(projected.Options(proj_type=proj_type, ndf=16))
    assert sum(p.numel() for p in lighter.parameters() if p.requires_grad) < params / 50


PARAMS = {
    "profile": "test",
    "profiles": {"test": {"eval_samples": 16, "n_fake": 16, "n_real": 16}},
    "datasets": {"icons": {"source": "imagefolder", "path": str(ICONS), "resolution": 64, "split": "all"}},
    "defaults": {"seed": 0, "batch_size": 8, "lr_g": 2e-4, "lr_d": 2e-4, "z_dim": 32, "device": "cpu"},
    "metrics": {"extractors": ["effnet"]},
    "experiments": {
        "proj": {"study": "projected_gan", "model": "projected", "dataset": "icons", "loss": "hinge", "epochs": 1,
                 "model_args": {"ngf": 8, "ndf": 16}, "ema_decay": 0.5,
                 "augment": {"ops": ["color", "translation", "cutout"], "adaptive": True, "p": 0.5}},
    },
}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    root = tmp_path_factory.mktemp("icons")
    with study_workspace(root, PARAMS) as params:
        cfg = resolve_experiment(params, "proj")
        yield Trainer("proj", cfg, data.load_prepared(layout.prepared_dir("icons")), RunDir(root / "runs" / "proj"),
                      metrics_cfg=params.metrics)


def test_frozen_projector_unchanged_discriminator_trained(trainer):
    frozen = {k: v.clone() for k, v in trainer.nets.D.projector.state_dict().items()}
    heads = {k: v.clone() for k, v in trainer.nets.D.discs.state_dict().items()}
    g_before = trainer.nets.G.to_img.weight.clone()
    ema_before = trainer.nets.G_ema.to_img.weight.clone()
    stats = trainer.train_step(trainer.images[:8], trainer.labels[:8])
    assert torch.isfinite(stats).all()
    for key, value in trainer.nets.D.projector.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, frozen[key]), key
    assert not all(p.requires_grad for p in trainer.nets.D.projector.parameters())
    assert any(not torch.equal(v, heads[k]) for k, v in trainer.nets.D.discs.state_dict().items())
    g_after = trainer.nets.G.to_img.weight
    assert not torch.equal(g_after, g_before)
    # EMA after the first G update: decay warmed up to (1 + 0) / (10 + 0) = 0.1 (< the configured 0.5)
    torch.testing.assert_close(trainer.nets.G_ema.to_img.weight, 0.1 * ema_before + 0.9 * g_after)
    assert trainer.nets.sampler is trainer.nets.G_ema


def test_ema_decay_warms_up_to_the_configured_value(trainer):
    decays = [step.ema_decay(trainer.settings.ema_decay, g_updates) for g_updates in (0, 8, 1000)]
    assert decays == pytest.approx([0.1, 0.5, 0.5])  # (1+0)/10, (1+8)/18 = 0.5, then capped at 0.5


def test_gradient_reaches_the_generated_image(trainer):
    z = torch.randn(4, 32)
    fake = trainer.nets.G(z)
    fake.retain_grad()
    trainer.nets.D(step.d_input(trainer.terms, fake)).logits.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in trainer.nets.D.projector.parameters())


def test_diff_augment_ops():
    torch.manual_seed(0)
    x = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = augment.diff_augment(x, augment.OPS)
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0  # differentiable
    assert torch.equal(augment.diff_augment(x, augment.OPS, torch.tensor(0.0)), x)  # p = 0: untouched
    ones = torch.ones(4, 1, 16, 16)
    cut = augment.cutout(ones)
    assert ((cut == 0).flatten(1).sum(1) <= 64).all() and ((cut == 0).flatten(1).sum(1) > 0).all()  # <= 8 x 8
    small = augment.diff_augment(torch.ones(64, 1, 16, 16), ["cutout"], cutout_ratio=0.2)  # ProjectedGAN's 0.2
    assert (small == 0).flatten(1).sum(1).max() == 9  # a 3 x 3 square (0.2 x 16 rounded) where fully inside


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """DiffAugment's translation by (dy, dx): out[i, j] = image[i + dy, j + dx], zero where that
    falls outside the image."""
    h, w = image.shape[-2:]
    out = torch.zeros_like(image)
    out[..., max(0, -dy) : min(h, h - dy), max(0, -dx) : min(w, w - dx)] = \
        image[..., max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)]
    return out


def test_translation_shifts_each_image_with_zero_padding():
    """Each output image is its input shifted by a random (dy, dx) in [-2, 2]^2 (0.125 x 16 rounded)
    with zeros shifted in, and the shifts vary: most images move, in both directions."""
    torch.manual_seed(0)
    x = (torch.arange(2 * 16 * 16, dtype=torch.float32) + 1).view(1, 2, 16, 16).repeat(64, 1, 1, 1)  # no zero pixel
    x = x + torch.arange(64.0).view(64, 1, 1, 1) * 1000  # and every image its own
    moved = augment.translation(x)
    assert moved.shape == x.shape
    shifts = []
    for image, original in zip(moved, x):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(image, shifted(original, dy, dx))]
        assert len(found) == 1, found  # a zero-padded shift of its own input (each image holds its own values)
        shifts.append(found[0])
    dys, dxs = {dy for dy, _ in shifts}, {dx for _, dx in shifts}
    assert dys == dxs == {-2, -1, 0, 1, 2}  # every shift up to the ratio occurs, both ways
    assert sum(s != (0, 0) for s in shifts) > 48  # an identity (or a constant shift) fails here
    assert (moved == 0).any() and not (x == 0).any()  # the border is zero-filled, not wrapped or clamped


def test_adaptive_probability_moves_towards_balance():
    control = augment.AdaptiveProbability(0.5, 0.1, 0.8, "cpu")
    control.update(real_loss=torch.tensor(0.1), fake_loss=torch.tensor(0.9))  # reals easier: augment more
    assert float(control.p) == pytest.approx(0.6)
    for _ in range(5):
        control.update(real_loss=torch.tensor(0.1), fake_loss=torch.tensor(0.9))
    assert float(control.p) == pytest.approx(0.8)  # capped at p_max
    control.update(real_loss=torch.tensor(0.9), fake_loss=torch.tensor(0.1))
    assert float(control.p) == pytest.approx(0.7)
