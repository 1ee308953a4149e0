"""What a training is built from: its training images, the terms of its objective, and its nets
and optimisers placed on the device (and, in several processes, synchronised and wrapped:
pipeline.train.distributed)."""
from __future__ import annotations

import copy

import torch

from pipeline import nets
from pipeline.core import registry
from pipeline.core.config import ExperimentConfig
from pipeline.core.errors import ConfigError
from pipeline.data.prepare import Prepared
from pipeline.train import distributed
from pipeline.train.checkpoint import Architecture
from pipeline.train.step import Nets, inputs
from pipeline.train.terms import Term, TrainingContext, terms_for


def training_images(name: str, cfg: ExperimentConfig, prepared: Prepared,
                    n_critic: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) to train on: the prepared set, or `max_train_images` of it drawn once by a
    fixed seed; refused when one iteration would take more images than there are."""
    images, labels = prepared.images, prepared.labels
    if cfg.max_train_images and cfg.max_train_images < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: cfg.max_train_images]
        images, labels = images[keep.sort().values], labels[keep.sort().values]
    if len(images) < cfg.batch_size * n_critic:
        raise ConfigError(
            f"{name}: one iteration takes batch_size {cfg.batch_size} x n_critic {n_critic} = "
            f"{cfg.batch_size * n_critic} real images, but dataset '{cfg.dataset}' has {len(images)} to train on: "
            f"lower batch_size in experiments.{name} (or defaults), or give the dataset more images")
    return images, labels


def objective_terms(cfg: ExperimentConfig, images: torch.Tensor, labels: torch.Tensor,
                    device: torch.device) -> list[Term]:
    """The objective's parts this experiment asks for (pipeline.train.terms), in TERMS order."""
    family = nets.FAMILIES[cfg.model]
    return terms_for(TrainingContext(cfg, family, family.Options(**cfg.model_args), registry.LOSSES[cfg.loss],
                                     images, labels, inputs, device))


def build_nets(cfg: ExperimentConfig, arch: Architecture, device: torch.device) -> Nets:
    """G and D with identical initial weights for a given seed, their Adam optimisers and G's EMA copy."""
    G, D = arch.build(seed=cfg.seed)
    # batch norm over the global batch, before the optimisers see the parameters
    G, D = distributed.sync_batchnorm(G, device), distributed.sync_batchnorm(D, device)
    # channels_last suits both cuDNN and oneDNN convolutions (measured ~1.1-1.3x on this CPU too)
    G.to(device, memory_format=torch.channels_last)
    D.to(device, memory_format=torch.channels_last)
    adam = {"fused": True} if device.type == "cuda" else {}
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas_g, **adam)
    # D's trainable parameters only: a frozen part (ProjectedGAN's projector) is never optimised
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=cfg.lr_d, betas=cfg.betas_d, **adam)
    # EMA of G's weights (used for samples, metrics and the saved G when enabled)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_decay else None
    # DDP wrappers average the gradients over the processes (the nets themselves in one process)
    g_step = distributed.data_parallel(G, device)
    d_step = distributed.data_parallel(D, device, some_unused=cfg.pretrain_classifier_epochs > 0)
    d_for_g = D
    if cfg.compile:
        g_step, d_step, d_for_g = (torch.compile(m) for m in (g_step, d_step, D))
    return Nets(G, D, opt_g, opt_d, G_ema, g_step=g_step, d_step=d_step, d_for_g=d_for_g)
