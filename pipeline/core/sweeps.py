"""Budgeted hyperparameter sweeps, as Lucic et al. ("Are GANs Created Equal?", 2018) compared
losses: every loss gets the same N random draws of its hyperparameters.

A sweep is declared under `sweeps:` in params.yaml (a base experiment, the losses, the search
space, the number of draws, a seed) and expands into ordinary experiments named
`<sweep>_<loss>_dNN`, each with its own DVC stages and MLflow run (`sweep` and `draw` among its
params). The draws come from Python's own Mersenne Twister seeded by the sweep's seed, so every
machine expands a sweep alike, and they do not depend on the losses: draw NN is the same setting
for every loss. DVC reads the experiments from params.yaml itself, so the expansion is written there
(`python tools/expand_sweeps.py`); loading params.yaml refuses a sweep whose experiments are not its
expansion, naming that command.
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping

from pydantic import Field, model_validator

from pipeline.core.schema import StrictModel

# search-space keys that set two experiment keys at once (Lucic et al. draw one Adam beta1 / beta2
# and one learning rate for both nets)
SHARED_KEYS = {"lr": ("lr_g", "lr_d"), "beta1": ("betas_g", "betas_d"), "beta2": ("betas_g", "betas_d")}
BETA_INDEX = {"beta1": 0, "beta2": 1}


class Distribution(StrictModel):
    """Exactly one of: log_uniform [low, high] (low > 0), uniform [low, high], int_uniform [low,
    high] (both included), choice [values...]."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_uniform: tuple[int, int] | None = None
    choice: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> "Distribution":
        given = [k for k in ("log_uniform", "uniform", "int_uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of log_uniform, uniform, int_uniform, choice"
                             + (f" (got {', '.join(given)})" if given else ""))
        bounds = self.log_uniform or self.uniform or self.int_uniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: low {bounds[0]} must be below high {bounds[1]}")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform: low {self.log_uniform[0]} must be above 0")
        return self

    def draw(self, rng: random.Random):
        if self.log_uniform is not None:
            low, high = self.log_uniform
            return _readable(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.uniform is not None:
            return _readable(rng.uniform(*self.uniform))
        if self.int_uniform is not None:
            return rng.randint(*self.int_uniform)
        return self.choice[rng.randrange(len(self.choice))]


def _readable(value: float) -> float:
    """Six significant digits: params.yaml stays readable and the value round-trips through YAML."""
    return float(f"{value:.6g}")


class SweepConfig(StrictModel):
    base: dict[str, Any]  # an experiments entry without `loss` (study, model, dataset, epochs, ...)
    losses: list[str] = Field(min_length=1)
    draws: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)
    space: dict[str, Distribution] = Field(min_length=1)

    @model_validator(mode="after")
    def _base_leaves_the_loss(self) -> "SweepConfig":
        for key in ("loss", "sweep", "draw"):
            if key in self.base:
                raise ValueError(f"base: sets `{key}`, which the sweep sets for each of its experiments")
            if key in self.space:
                raise ValueError(f"space: searches `{key}`, which the sweep sets for each of its experiments")
        return self


def draws(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The sweep's N settings of its search space, in draw order (keys drawn in sorted order)."""
    rng = random.Random(sweep.seed)
    return [{key: sweep.space[key].draw(rng) for key in sorted(sweep.space)} for _ in range(sweep.draws)]


def apply(entry: dict, setting: dict, defaults: Mapping[str, Any]) -> dict:
    """`entry` with one drawn setting: shared keys (lr, beta1, beta2) set both nets' values; a drawn
    beta1 keeps beta2 as the entry, else `defaults` (the experiment defaults), has it, and the other way round."""
    out = dict(entry)
    for key, value in setting.items():
        if key in BETA_INDEX:
            for betas in SHARED_KEYS[key]:
                pair = list(out.get(betas, defaults[betas]))
                pair[BETA_INDEX[key]] = value
                out[betas] = pair
        elif key in SHARED_KEYS:
            out.update(dict.fromkeys(SHARED_KEYS[key], value))
        else:
            out[key] = value
    return out


def experiment_name(sweep: str, loss: str, draw: int, n_draws: int) -> str:
    return f"{sweep}_{loss}_d{draw:0{max(2, len(str(n_draws - 1)))}d}"


def expand(name: str, sweep: SweepConfig, defaults: Mapping[str, Any]) -> dict[str, dict]:
    """The experiments entries of sweep `name`: every loss x every draw, the same draws for every loss.
    `defaults`: what an entry leaves unset (params.yaml's `defaults:` over ExperimentConfig's)."""
    settings = draws(sweep)
    return {experiment_name(name, loss, i, sweep.draws): apply({**sweep.base, "loss": loss, "sweep": name, "draw": i},
                                                               setting, defaults)
            for loss in sweep.losses for i, setting in enumerate(settings)}
