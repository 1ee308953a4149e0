"""A trained GAN's checkpoint (checkpoints/last.pt, best.pt), written and read here only.

It keeps the nets' weights with their architecture arguments (family, model_args, z_dim, image
shape, classes) and latent settings: loading rebuilds the nets from those alone, so a checkpoint
stays loadable when a rule of the experiment config changes. The full config rides along for
provenance only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import nets
from pipeline.core.config import ExperimentConfig
from pipeline.nets.sampling import Sampler


@dataclass(frozen=True)
class Architecture:
    """What building a family's G and D takes."""

    model: str
    model_args: dict
    z_dim: int
    channels: int
    resolution: int
    num_classes: int

    @classmethod
    def of(cls, cfg: ExperimentConfig, channels: int, resolution: int, num_classes: int) -> Architecture:
        return cls(cfg.model, dict(cfg.model_args), cfg.z_dim, channels, resolution, num_classes)

    def build(self, seed: int | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(G, D), initialised from `seed` when given (the same initial weights for a given seed)."""
        family = nets.FAMILIES[self.model]
        if seed is not None:
            torch.manual_seed(seed)
        return family.build(family.Options(**self.model_args), z_dim=self.z_dim, channels=self.channels,
                            resolution=self.resolution, num_classes=self.num_classes)


def contents(cfg: ExperimentConfig, arch: Architecture, **weights_and_state) -> dict:
    """What a checkpoint file holds: the architecture and latent settings, then the caller's weights
    (G, D, ...) and loop state."""
    return {"architecture": vars(arch), "latent": {"z_dist": cfg.z_dist, "z_mean": cfg.z_mean},
            "config": cfg.model_dump(mode="json"), "fingerprint": cfg.fingerprint(), **weights_and_state}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file, read once; its nets are rebuilt on request."""

    path: Path
    state: dict

    @property
    def architecture(self) -> Architecture:
        if "architecture" in self.state:
            return Architecture(**self.state["architecture"])
        config = self.state["config"]  # written before the architecture was stored on its own
        return Architecture(config["model"], config["model_args"], config["z_dim"], self.state["channels"],
                            self.state["resolution"], self.state["num_classes"])

    @property
    def latent(self) -> dict:
        return self.state.get("latent") or {k: self.state["config"][k] for k in ("z_dist", "z_mean")}

    def generator(self, device="cpu") -> torch.nn.Module:
        G, _ = self.architecture.build()
        G.load_state_dict(self.state["G"])
        return G.to(device).eval()

    def discriminator(self, key: str = "D", device="cpu") -> torch.nn.Module:
        """D, or another network of D's architecture stored under `key` (the K+1 supervised baseline)."""
        _, D = self.architecture.build()
        D.load_state_dict(self.state[key])
        return D.to(device).eval()

    def sampler(self) -> Sampler:
        """G with its latent settings: the run's MLflow model (see pipeline.nets.sampling.Sampler)."""
        arch = self.architecture
        return Sampler(self.generator(), z_dim=arch.z_dim, num_classes=arch.num_classes,
                       conditional=nets.FAMILIES[arch.model].conditional, **self.latent)


def load_checkpoint(path: Path) -> Checkpoint:
    return Checkpoint(Path(path), torch.load(path, map_location="cpu", weights_only=False))
