"""The training step (pipeline.train.step) on tiny tensors alone: no workspace, no prepared data, no
MLflow store. What each update may and may not touch, n_critic, the EMA's warm-up, the labels a
conditional G gets, the pre-training step, and that the step is a function of its inputs."""
import copy

import pytest
import torch
from torch import nn

from pipeline import nets
from pipeline.core.config import LabelNoise
from pipeline.core.registry import LOSSES
from pipeline.train import step
from pipeline.train.terms.adversarial import Adversarial
from pipeline.train.terms.class_head import ClassHead

Z_DIM, CHANNELS, RESOLUTION, CLASSES = 4, 1, 8, 3


def settings(**overrides) -> step.StepSettings:
    values = dict(n_critic=1, z_dim=Z_DIM, z_dist="normal", z_mean=0.0, conditional=False, num_classes=0,
                  fake_labels="batch", d_step_inference_mode=False, d_loss_threshold=0.1, ema_decay=None,
                  precision="fp32")
    return step.StepSettings(**{**values, **overrides})


def mlp_nets(ema: bool = False) -> step.Nets:
    family = nets.FAMILIES["mlp"]
    torch.manual_seed(0)
    G, D = family.build(family.Options(g_hidden=(16,), d_hidden=(16,)), z_dim=Z_DIM, channels=CHANNELS,
                        resolution=RESOLUTION)
    return with_optimisers(G, D, ema)


def acgan_nets() -> step.Nets:
    family = nets.FAMILIES["acgan"]
    torch.manual_seed(0)
    G, D = family.build(family.Options(g_width=8, d_width=4, fc_width=16), z_dim=Z_DIM, channels=CHANNELS,
                        resolution=RESOLUTION, num_classes=CLASSES)
    return with_optimisers(G, D)


def with_optimisers(G: nn.Module, D: nn.Module, ema: bool = False) -> step.Nets:
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if ema else None
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=1e-2)
    return step.Nets(G, D, torch.optim.Adam(G.parameters(), lr=1e-2), opt_d, G_ema)


def adversarial(loss: str = "non_saturating", label_noise=None) -> list:
    return [Adversarial(LOSSES[loss], label_noise, for_g=True)]


def batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, CHANNELS, RESOLUTION, RESOLUTION), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, CLASSES, (n,), generator=gen)


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> list[str]:
    return [k for k, v in module.named_parameters() if not torch.equal(v, before[k])]


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_one_step_updates_d_and_g_and_returns_its_statistics_as_one_tensor():
    n, terms = mlp_nets(), adversarial()
    g_before, d_before = parameters(n.G), parameters(n.D)
    stats = step.train_step(n, terms, settings(), *batch(), g_updates=0)
    assert isinstance(stats, torch.Tensor) and stats.shape == (len(step.stat_names(terms)),)
    assert stats.dtype == torch.float32 and torch.isfinite(stats).all()
    assert set(changed(g_before, n.G)) == set(g_before) and set(changed(d_before, n.D)) == set(d_before)
    assert adam_steps(n.opt_d) == 1 and adam_steps(n.opt_g) == 1
    row = dict(zip(step.stat_names(terms), stats.tolist()))
    assert 0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1 and row["g_grad_norm"] > row["g_out_grad_norm"] > 0


def test_n_critic_2_gives_d_two_updates_on_two_halves_of_the_batch_and_g_one():
    n, terms = mlp_nets(), adversarial("hinge")
    real_batches = []
    d_forward = n.d_step
    n.d_step = lambda x, y=None: real_batches.append(len(x)) or d_forward(x, y)
    step.train_step(n, terms, settings(n_critic=2), *batch(16), g_updates=0)
    assert adam_steps(n.opt_d) == 2 and adam_steps(n.opt_g) == 1
    assert real_batches == [8, 8, 8, 8]  # per D update: the real half, then a generated batch as large


def test_ema_moves_towards_g_by_the_warm_up_decay():
    """decay = min(ema_decay, (1 + n) / (10 + n)) after n earlier G updates: 0.1 at the first,
    0.91 after 90, the configured 0.95 once the warm-up passes it."""
    for g_updates, decay in ((0, 0.1), (90, 0.91), (10_000, 0.95)):
        n = mlp_nets(ema=True)
        with torch.no_grad():  # an EMA copy apart from G, so the blend shows
            for p in n.G_ema.parameters():
                p.add_(1.0)
        ema_before = parameters(n.G_ema)
        step.train_step(n, adversarial(), settings(ema_decay=0.95), *batch(), g_updates=g_updates)
        for name, live in n.G.named_parameters():
            expected = decay * ema_before[name] + (1 - decay) * live.detach()
            torch.testing.assert_close(dict(n.G_ema.named_parameters())[name], expected)
        assert n.sampler is n.G_ema


def test_g_update_changes_g_only_and_leaves_ds_parameters_and_their_freezing_as_they_were():
    n = mlp_nets()
    frozen = n.D.net[0].weight  # a frozen part of D (as ProjectedGAN's projector): never unfrozen
    frozen.requires_grad_(False)
    n = with_optimisers(n.G, n.D)
    g_before, d_before = parameters(n.G), parameters(n.D)
    real = step.inputs(batch()[0])
    fake = n.G(torch.randn(8, Z_DIM))
    stats = step.g_update(n, adversarial(), settings(), fake, None, real, g_updates=0)
    assert changed(d_before, n.D) == [] and all(p.grad is None for p in n.D.parameters())
    assert [p.requires_grad for p in n.D.parameters()] == [p is not frozen for p in n.D.parameters()]
    assert set(changed(g_before, n.G)) == set(g_before) and stats["loss_g"].requires_grad is False


def test_d_update_changes_d_only():
    n = mlp_nets()
    g_before, d_before = parameters(n.G), parameters(n.D)
    fake, fake_labels, stats = step.d_update(n, adversarial(), settings(), step.inputs(batch()[0]), None)
    assert changed(g_before, n.G) == [] and all(p.grad is None for p in n.G.parameters())
    assert set(changed(d_before, n.D)) == set(d_before)
    assert fake.shape == (8, CHANNELS, RESOLUTION, RESOLUTION) and fake_labels is None
    assert all(not v.requires_grad for v in stats.values())


@pytest.mark.parametrize("inference_mode", [False, True])
def test_d_sees_g_in_inference_mode_when_asked_and_both_train_afterwards(inference_mode):
    n = mlp_nets()
    g_eval = copy.deepcopy(n.G).eval()
    seen = []
    d_forward = n.d_step
    n.d_step = lambda x, y=None: seen.append(x.detach().clone()) or d_forward(x, y)
    torch.manual_seed(3)
    z = torch.randn(8, Z_DIM)
    torch.manual_seed(3)
    step.train_step(n, adversarial(), settings(d_step_inference_mode=inference_mode), *batch(), g_updates=0)
    with torch.no_grad():
        assert torch.allclose(seen[1], g_eval(z)) == inference_mode  # seen: the real batch, then the generated one
    assert n.G.training and n.D.training


def test_the_step_is_a_function_of_nets_batch_and_random_stream():
    """Same nets, batch and seed: the same statistics and weights (what batching over seeds needs)."""
    runs = []
    for _ in range(2):
        n = mlp_nets(ema=True)
        torch.manual_seed(7)
        stats = step.train_step(n, adversarial(label_noise=LabelNoise(real=(0.7, 1.0), fake=(0.0, 0.3))),
                                settings(ema_decay=0.9), *batch(), g_updates=0)
        runs.append((stats, parameters(n.G), parameters(n.D), parameters(n.G_ema)))
    (stats_a, *nets_a), (stats_b, *nets_b) = runs
    assert torch.equal(stats_a, stats_b)
    for a, b in zip(nets_a, nets_b):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fake_labels", ["batch", "uniform"])
def test_a_conditional_g_gets_the_real_labels_or_evenly_drawn_ones_through_draw(fake_labels):
    n, terms = acgan_nets(), adversarial() + [ClassHead()]
    drawn = []

    def draw(make, size):  # as the DDP draw: every random batch of the step goes through it
        drawn.append(size)
        return make(size)

    images, labels = batch(32)
    _, fake_labels_got, stats = step.d_update(n, terms, settings(conditional=True, num_classes=CLASSES,
                                                                 fake_labels=fake_labels),
                                              step.inputs(images), labels, draw=draw)
    if fake_labels == "batch":
        assert fake_labels_got is labels and drawn == [32]  # the latents only
    else:
        assert drawn == [32, 32] and set(fake_labels_got.tolist()) == set(range(CLASSES))
    assert {"cls_real", "cls_fake"} <= set(stats)


def test_pretraining_trains_ds_class_head_only():
    n = acgan_nets()
    g_before, d_before = parameters(n.G), parameters(n.D)
    images, labels = batch(16)
    loss, acc = step.pretrain_step(n, settings(conditional=True, num_classes=CLASSES), images, labels).tolist()
    assert loss > 0 and 0 <= acc <= 1
    assert changed(g_before, n.G) == [] and changed(d_before, n.D)
    assert adam_steps(n.opt_d) == 1 and not n.opt_g.state
