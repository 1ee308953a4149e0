"""One training iteration as functions of the nets, their optimisers, a batch and the objective's
terms (pipeline.train.terms): n_critic D updates, then one G update, then G's EMA.

Nothing here reads a file, logs, draws a progress bar or talks to other processes: the loop
(pipeline.train.loop) calls it, and the statistics come back as one device tensor (no host sync).
A run in several processes passes `draw`, which draws the global batch's random numbers and keeps
this process's slice (pipeline.train.distributed.global_draw); the nets' DDP wrappers ride in `Nets`.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.sampling import sample_z, to_unit_range
from pipeline.train.terms import DStep, GStep, Term

# Per-iteration diagnostics. d_real / d_fake: mean sigmoid(D logit), i.e. D(x) and D(G(z)) for the
# BCE losses; logit_*: the raw outputs; g_out_grad_norm: G's gradient at its output layer;
# d_loss_low: share of D updates whose loss fell below d_loss_threshold (D wins outright, the
# regime where the saturating G loss stops giving gradient).
STAT_NAMES = ("loss_d", "d_real", "d_fake", "logit_real", "logit_fake", "loss_g", "g_grad_norm", "g_out_grad_norm",
              "d_loss_low")


def stat_names(terms: list[Term]) -> tuple[str, ...]:
    """The order of the statistics `train_step` returns: the common ones, then each term's."""
    return STAT_NAMES + tuple(name for term in terms for name in term.stats)


def plain_draw(make: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
    """`make(n)`: one process draws the whole batch's random numbers."""
    return make(n)


@dataclass(frozen=True)
class StepSettings:
    """What an iteration reads of the experiment's settings (with the latent settings that
    pipeline.nets.sampling.sample_z reads). A resumed run keeps the precision it started in."""

    n_critic: int  # D updates per G update
    z_dim: int
    z_dist: str
    z_mean: float
    conditional: bool
    num_classes: int
    fake_labels: str  # "batch": G gets the real batch's labels; "uniform": drawn evenly
    d_step_inference_mode: bool  # D's generated batch made by G in eval mode, without gradients
    d_loss_threshold: float
    ema_decay: float | None
    precision: str  # "bf16" runs the nets under bf16 autocast

    @classmethod
    def of(cls, cfg, *, n_critic: int, conditional: bool, num_classes: int, precision: str) -> StepSettings:
        return cls(n_critic, cfg.z_dim, cfg.z_dist, cfg.z_mean, conditional, num_classes, cfg.fake_labels,
                   cfg.d_step_inference_mode, cfg.d_loss_threshold, cfg.ema_decay, precision)


@dataclass
class Nets:
    """G and D, their optimisers, G's EMA copy (if any), and the handles the steps call them through:
    the nets themselves, or their DDP wrappers (which average gradients over the processes) and
    compiled forms. G's update runs D through `d_for_g`, never the DDP wrapper: it needs gradients
    through D, not D's own (DDP would wait for them)."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    G_ema: nn.Module | None = None
    g_step: Callable | None = None
    d_step: Callable | None = None
    d_for_g: Callable | None = None

    def __post_init__(self):
        self.g_step = self.G if self.g_step is None else self.g_step
        self.d_step = self.D if self.d_step is None else self.d_step
        self.d_for_g = self.D if self.d_for_g is None else self.d_for_g
        # D's trainable parameters: a frozen part (ProjectedGAN's projector) is never optimised or unfrozen
        self.d_params = [p for p in self.D.parameters() if p.requires_grad]
        last = [m for m in self.G.modules() if any(True for _ in m.parameters(recurse=False))][-1]
        self.g_output_params = list(last.parameters())  # G's output layer, for its own gradient norm

    @property
    def sampler(self) -> nn.Module:
        """The generator that draws samples and is evaluated: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def inputs(real_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images as D sees them: in [-1, 1], in the training layout (channels_last)."""
    x = to_unit_range(real_uint8)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def d_input(terms: list[Term], images: torch.Tensor) -> torch.Tensor:
    """What D sees of any image: the terms' transforms (augmentation), in order."""
    for term in terms:
        images = term.d_input(images)
    return images


def latents(settings: StepSettings, n: int, device: torch.device, draw=plain_draw) -> torch.Tensor:
    return draw(lambda total: sample_z(total, settings, device=device), n)


def ema_decay(configured: float, g_updates: int) -> float:
    """The configured EMA decay, warmed up as (1 + n) / (10 + n) over the first n G updates:
    with a constant 0.999 a short run's EMA generator would still be ~90% its random init
    after 100 steps (samples and metrics of a flat grey image)."""
    return min(configured, (1 + g_updates) / (10 + g_updates))


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), live.buffers()):
        b_ema.copy_(b)


def train_step(nets: Nets, terms: list[Term], settings: StepSettings, real_uint8: torch.Tensor,
               labels: torch.Tensor, *, g_updates: int, draw=plain_draw) -> torch.Tensor:
    """One iteration: n_critic D updates (one per batch of `real_uint8`, which holds n_critic
    batches), then one G update on the last D update's generated batch; `g_updates`: G updates
    before this one (the EMA's warm-up). Returns the stats in `stat_names(terms)` order as one
    device tensor.

    Conditional families get the real labels with the real images and, for the generated ones,
    the same labels (`fake_labels: batch`) or uniformly drawn ones."""
    d_stats = []
    for x_u8, y in zip(real_uint8.chunk(settings.n_critic), labels.chunk(settings.n_critic)):
        x = inputs(x_u8)
        fake, y_fake, stats = d_update(nets, terms, settings, x, y, draw=draw)
        d_stats.append(stats)
    stats = {k: torch.stack([s[k] for s in d_stats]).mean() for k in d_stats[0]}
    if settings.d_step_inference_mode:  # D's batch came from G in inference mode: G's step needs its own
        with autocast(settings.precision, x.device):
            fake = nets.g_step(latents(settings, len(x), x.device, draw), y_fake)
    stats.update(g_update(nets, terms, settings, fake, y_fake, x, g_updates=g_updates))
    return torch.stack([stats[name] for name in stat_names(terms)])


def d_update(nets: Nets, terms: list[Term], settings: StepSettings, real: torch.Tensor, labels: torch.Tensor, *,
             draw=plain_draw) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """One D update on `real` (in [-1, 1]); returns (the generated batch, its labels, D's stats by name)."""
    device = real.device
    z = latents(settings, len(real), device, draw)
    if not settings.conditional:
        y_fake = None
    elif settings.fake_labels == "batch":  # G draws the classes this real batch holds
        y_fake = labels
    else:
        y_fake = draw(lambda n: torch.randint(0, settings.num_classes, (n,), device=device), len(real))
    inference_mode = settings.d_step_inference_mode
    if inference_mode:
        nets.G.eval()
        nets.D.eval()
    with autocast(settings.precision, device), torch.no_grad() if inference_mode else contextlib.nullcontext():
        fake = nets.g_step(z, y_fake)
    with autocast(settings.precision, device):
        real_out = nets.d_step(d_input(terms, real), labels)
        fake_out = nets.d_step(d_input(terms, fake.detach()), y_fake)
        step = DStep(real, labels, fake, y_fake, real_out, fake_out, real_out.logits.float(), fake_out.logits.float(),
                     d=nets.d_step, draw=draw)
        loss_d = None
        for term in terms:
            loss_d = term.d_loss(step, loss_d)
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    nets.opt_d.step()
    if inference_mode:
        nets.G.train()
        nets.D.train()
    for term in terms:
        term.after_d_update(step)
    loss_d = loss_d.detach()
    real_logits, fake_logits = step.real_logits.detach(), step.fake_logits.detach()
    stats = {**step.stats, "loss_d": loss_d, "d_real": torch.sigmoid(real_logits).mean(),
             "d_fake": torch.sigmoid(fake_logits).mean(), "logit_real": real_logits.mean(),
             "logit_fake": fake_logits.mean(), "d_loss_low": (loss_d < settings.d_loss_threshold).float()}
    return fake, y_fake, {k: v.detach() for k, v in stats.items()}


def g_update(nets: Nets, terms: list[Term], settings: StepSettings, fake: torch.Tensor,
             fake_labels: torch.Tensor | None, real: torch.Tensor, *, g_updates: int) -> dict:
    """One G update through D (D's parameters frozen meanwhile, so D gets no gradient), then G's
    EMA; returns G's stats by name: loss_g, its gradient norm (all parameters) and at its output layer."""
    for p in nets.d_params:
        p.requires_grad_(False)
    with autocast(settings.precision, fake.device):
        step = GStep(nets.d_for_g(d_input(terms, fake), fake_labels), fake, fake_labels, real, d=nets.d_for_g,
                     d_input=functools.partial(d_input, terms))
        loss_g = sum(value for term in terms for value in term.g_loss(step).values())
    nets.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    for p in nets.d_params:
        p.requires_grad_(True)
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in nets.G.parameters() if p.grad is not None])
    out_norm = torch.nn.utils.get_total_norm([p.grad for p in nets.g_output_params if p.grad is not None])
    nets.opt_g.step()
    if nets.G_ema is not None:
        update_ema(nets.G_ema, nets.G, ema_decay(settings.ema_decay, g_updates))
    return {**step.stats, "loss_g": loss_g.detach(), "g_grad_norm": grad_norm.detach().float(),
            "g_out_grad_norm": out_norm.detach().float()}


def pretrain_step(nets: Nets, settings: StepSettings, real_uint8: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D's class head (and trunk) on real images only; returns (class loss, accuracy) on the device."""
    with autocast(settings.precision, real_uint8.device):
        logits = nets.d_step(inputs(real_uint8), labels).class_logits.float()
        loss = F.cross_entropy(logits, labels)
    nets.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_d.step()
    return torch.stack([loss.detach(), (logits.argmax(1) == labels).float().mean()])
