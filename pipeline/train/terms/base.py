"""What a term sees of one D update and one G update, and the interface every term implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from pipeline.core.config import ExperimentConfig
    from pipeline.core.registry import AdversarialLoss
    from pipeline.nets import Family


@dataclass
class TrainingContext:
    """What a term may be built from: the settings, the family's capabilities and the training data."""

    cfg: ExperimentConfig
    family: Family
    options: object  # the family's validated model_args (its Options)
    loss: AdversarialLoss
    images: torch.Tensor  # uint8, on the device
    labels: torch.Tensor
    inputs: Callable  # uint8 images -> D's input (in [-1, 1], the training layout)
    device: torch.device


@dataclass
class DStep:
    """One D update: the real batch (in [-1, 1]) and its labels, the generated batch and the labels G
    was given, D's outputs on both (after every term's `d_input`). Terms add statistics to `stats`."""

    real: torch.Tensor
    labels: torch.Tensor | None
    fake: torch.Tensor
    fake_labels: torch.Tensor | None
    real_out: object  # pipeline.nets.common.DOut
    fake_out: object
    real_logits: torch.Tensor  # D's adversarial outputs in fp32
    fake_logits: torch.Tensor
    d: Callable  # D's forward (the DDP wrapper in several processes): d(images, labels) -> DOut
    draw: Callable  # draw(make, n): this process's share of a global batch of random numbers
    stats: dict = field(default_factory=dict)


@dataclass
class GStep:
    """One G update: D's output on the generated batch, that batch and its labels, and the last D
    update's real batch; `d` runs D for G (gradients through it, not into it)."""

    gen_out: object
    fake: torch.Tensor
    fake_labels: torch.Tensor | None
    real: torch.Tensor
    d: Callable
    d_input: Callable  # every term's transform of D's input, in order
    stats: dict = field(default_factory=dict)


class Term:
    """A part of the objective. Every hook has a neutral default: a term overrides what it changes."""

    stats: tuple[str, ...] = ()  # the per-iteration statistics it logs, in this order
    not_distributable: str | None = None  # why it cannot run in several processes (DDP), if it cannot

    @classmethod
    def from_config(cls, context: TrainingContext) -> Term | None:
        """This term when the experiment asks for it, else None."""
        raise NotImplementedError

    def d_input(self, images: torch.Tensor) -> torch.Tensor:
        """Every image D sees passes through here (real and generated, in D's and in G's step)."""
        return images

    def d_loss(self, step: DStep, loss: torch.Tensor | None) -> torch.Tensor | None:
        """D's loss with this term (given the terms before it)."""
        return loss

    def after_d_update(self, step: DStep) -> None:
        """After D's optimiser step."""

    def g_loss(self, step: GStep) -> dict[str, torch.Tensor]:
        """What it adds to G's loss, by name."""
        return {}

    def derived_stats(self, row: dict) -> dict:
        """Statistics computed from a row of logged means (not averaged themselves)."""
        return {}

    def epoch_stats(self) -> dict:
        """Per-epoch values for history.csv."""
        return {}

    def state(self) -> object:
        """What a resumed run needs to continue exactly (None: nothing)."""
        return None

    def load_state(self, state: object) -> None:
        pass

    def checkpoint_extras(self, *, fresh_d: Callable[[], torch.nn.Module], d_updates: int,
                          autocast: Callable) -> dict:
        """Entries the final checkpoint carries for this term's evaluation. `fresh_d()`: D's network
        as training initialised it; `d_updates`: D's optimiser steps in the GAN epochs; `autocast()`:
        the training's precision."""
        return {}
