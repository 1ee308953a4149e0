"""Latent sampling and image conversion shared by training, evaluation and benchmarks."""
from __future__ import annotations

import torch


def sample_z(n: int, cfg, *, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """n latents as the experiment `cfg` asks (z_dim, z_dist normal / uniform in [-1, 1], z_mean shift)."""
    if cfg.z_dist == "normal":
        z = torch.randn(n, cfg.z_dim, device=device, generator=generator)
    elif cfg.z_dist == "uniform":
        z = torch.rand(n, cfg.z_dim, device=device, generator=generator) * 2 - 1
    else:
        raise ValueError(f"unknown z_dist '{cfg.z_dist}'")
    return z + cfg.z_mean if cfg.z_mean else z


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range G's tanh produces."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] with rounding (what an image file would hold)."""
    return images.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


def labels_like(real_labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n labels drawn (seeded) from the empirical label distribution of a real set: fake sets
    compared with real ones by FID should have the same class mix."""
    counts = torch.bincount(real_labels).double()
    return torch.multinomial(counts, n, replacement=True, generator=torch.Generator().manual_seed(seed))


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: every class requested equally often (conditional accuracy)."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, cfg, *, seed: int, device, batch_size: int = 256,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """n uint8 images from G in eval mode, from a seeded latent stream (same seed, same images).
    Conditional generators need `labels` (n of them)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = sample_z(count, cfg, device=device, generator=generator)
        y = None if labels is None else labels[start : start + count].to(device)
        out.append(to_uint8(G(z, y)).cpu())
    G.train(was_training)
    return torch.cat(out)


class Sampler(torch.nn.Module):
    """A trained generator with what drawing from it takes (latent size and distribution, number of
    classes): what a run logs as its MLflow PyTorch model (`generator`, `generator_best`), so
    `mlflow.pytorch.load_model("runs:/<run id>/generator").sample(16)` gives images without ganlab."""

    def __init__(self, G: torch.nn.Module, *, z_dim: int, z_dist: str, z_mean: float, num_classes: int,
                 conditional: bool):
        super().__init__()
        self.G = G.eval()
        self.z_dim, self.z_dist, self.z_mean = z_dim, z_dist, z_mean
        self.num_classes, self.conditional = num_classes, conditional

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """G's output for latents z (and labels y for a conditional G): floats in [-1, 1]."""
        return self.G(z, y)

    def sample(self, n: int, *, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n uint8 images (N x C x H x W) from a seeded latent stream; a conditional G draws the
        classes `labels` asks for (default: every class in turn)."""
        if self.conditional and labels is None:
            labels = balanced_labels(n, self.num_classes)
        device = next(self.G.parameters()).device
        return generate(self.G, n, self, seed=seed, device=device, labels=labels)
