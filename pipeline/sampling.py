"""Latent sampling and image conversion shared by training, evaluation and benchmarks."""
from __future__ import annotations

import torch


def sample_z(n: int, z_dim: int, dist: str, *, device, generator: torch.Generator | None = None) -> torch.Tensor:
    if dist == "normal":
        return torch.randn(n, z_dim, device=device, generator=generator)
    if dist == "uniform":
        return torch.rand(n, z_dim, device=device, generator=generator) * 2 - 1
    raise ValueError(f"unknown z_dist '{dist}'")


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range G's tanh produces."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] with rounding (what an image file would hold)."""
    return images.float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, *, z_dim: int, z_dist: str, seed: int, device, batch_size: int = 256,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """n uint8 images from G in eval mode, from a seeded latent stream (same seed, same images)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        z = sample_z(count, z_dim, z_dist, device=device, generator=generator)
        y = None if labels is None else labels[start : start + count].to(device)
        out.append(to_uint8(G(z, y)).cpu())
    G.train(was_training)
    return torch.cat(out)
