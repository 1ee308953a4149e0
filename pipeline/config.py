"""Load and validate params.yaml; resolve one experiment (defaults <- experiment, then profile).

Everything is checked before any stage does work: an unknown key (with a did-you-mean), an
unknown model / loss / dataset / source, a wrong type or an impossible value raises one
ConfigError whose lines each name the offending key path.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline import data, losses, nets
from pipeline.errors import ConfigError
from pipeline.schema import StrictModel, did_you_mean

PARAMS_FILE = Path("params.yaml")


class DatasetConfig(StrictModel):
    source: str
    split: Literal["train", "test", "all"] = "train"
    resolution: int | None = Field(default=None, ge=8, le=1024)
    channels: Literal[1, 3] | None = None
    max_images: int | None = Field(default=None, ge=1)
    path: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _known_source(self) -> "DatasetConfig":
        if self.source not in data.SOURCES:
            raise ValueError(_unknown("source", self.source, data.SOURCES))
        data.check_options(self)
        return self


class ProfileConfig(StrictModel):
    """How a profile scales the experiments: quick proves the pipeline on a CPU, paper is full scale."""

    epochs_scale: float = Field(default=1.0, gt=0)
    max_epochs: int | None = Field(default=None, ge=1)
    max_train_images: int | None = Field(default=None, ge=1)
    eval_samples: int = Field(default=1000, ge=2)
    n_fake: int = Field(default=10000, ge=2)
    n_real: int | None = Field(default=None, ge=2)


class MetricsConfig(StrictModel):
    extractors: list[str] = ["effnet", "inception"]
    inception_weights: str | None = None
    batch_size: int = Field(default=64, ge=1)
    kid_subset_size: int = Field(default=1000, ge=2)
    cache_dir: str = "data/fidelity_cache"
    cheap_extractor: str = "effnet"

    @model_validator(mode="after")
    def _known_extractors(self) -> "MetricsConfig":
        from pipeline.metrics import KNOWN_EXTRACTORS

        for name in [*self.extractors, self.cheap_extractor]:
            if name not in KNOWN_EXTRACTORS:
                raise ValueError(_unknown("extractor", name, KNOWN_EXTRACTORS))
        return self


class ExperimentConfig(StrictModel):
    """One training run, after merging `defaults` and applying the active profile."""

    study: str = Field(min_length=1)
    model: str
    dataset: str
    loss: str
    seed: int = Field(ge=0)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr_g: float = Field(gt=0)
    lr_d: float = Field(gt=0)
    betas_g: tuple[float, float] = (0.5, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.999)
    z_dim: int = Field(ge=1)
    z_dist: Literal["normal", "uniform"] = "normal"
    model_args: dict[str, Any] = {}
    eval_every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)
    log_every: int = Field(default=50, ge=1)
    max_train_images: int | None = Field(default=None, ge=1)
    eval_samples: int = Field(default=1000, ge=2)
    n_fake: int = Field(default=10000, ge=2)
    n_real: int | None = Field(default=None, ge=2)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False

    @model_validator(mode="after")
    def _known_names(self) -> "ExperimentConfig":
        if self.model not in nets.FAMILIES:
            raise ValueError(_unknown("model", self.model, nets.FAMILIES))
        if self.loss not in losses.LOSSES:
            raise ValueError(_unknown("loss", self.loss, losses.LOSSES))
        try:
            nets.FAMILIES[self.model].Options(**self.model_args)
        except ValidationError as exc:
            raise ValueError(f"model_args for '{self.model}': " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<args>'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
            )) from None
        return self

    def fingerprint(self) -> str:
        """Identifies what a checkpoint was trained with, so resume never mixes configs."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Params(StrictModel):
    profile: str
    profiles: dict[str, ProfileConfig]
    datasets: dict[str, DatasetConfig]
    defaults: dict[str, Any] = {}
    metrics: MetricsConfig = MetricsConfig()
    experiments: dict[str, Any]  # each entry is checked by resolve_experiment, with its key path

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        if self.profile not in self.profiles:
            raise ValueError(_unknown("profile", self.profile, self.profiles))
        return self


def _unknown(kind: str, name: str, known) -> str:
    return f"unknown {kind} '{name}' ({did_you_mean(str(name), known)})"


def _format(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {path or '<top>'}: {msg}")
    return "\n".join(lines)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Parse and validate the whole params file, every experiment included."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        params = Params(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path} is invalid:\n{_format(exc)}") from None
    problems = []
    for name in params.experiments:
        try:
            resolve_experiment(params, name)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{path} is invalid:\n" + "\n".join(problems))
    return params


def resolve_dataset(params: Params, name: str) -> DatasetConfig:
    if name not in params.datasets:
        raise ConfigError("  " + _unknown("dataset", name, params.datasets))
    return params.datasets[name]


def resolve_experiment(params: Params, name: str) -> ExperimentConfig:
    """defaults <- experiments.<name>, then the profile's scaling; validated against the dataset."""
    if name not in params.experiments:
        raise ConfigError("  " + _unknown("experiment", name, params.experiments))
    entry = params.experiments[name]
    if not isinstance(entry, dict):
        raise ConfigError(f"  experiments.{name}: expected a mapping, got {type(entry).__name__}")
    if "dataset" not in entry or "study" not in entry:
        missing = [k for k in ("study", "dataset") if k not in entry]
        raise ConfigError(
            f"  experiments.{name}: must set {' and '.join(missing)} itself "
            "(dvc.yaml keys each train stage on its own study and dataset)"
        )
    merged = {**params.defaults, **entry}
    profile = params.profiles[params.profile]
    try:
        cfg = ExperimentConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_format(exc, prefix=f"experiments.{name}")) from None
    if cfg.dataset not in params.datasets:
        raise ConfigError(f"  experiments.{name}.dataset: " + _unknown("dataset", cfg.dataset, params.datasets))
    channels, resolution = data.dataset_shape(resolve_dataset(params, cfg.dataset))
    problem = nets.FAMILIES[cfg.model].check_shape(channels, resolution)
    if problem:
        raise ConfigError(
            f"  experiments.{name}.model: '{cfg.model}' cannot make the images of dataset "
            f"'{cfg.dataset}' ({channels}x{resolution}x{resolution}): {problem}"
        )
    return _apply_profile(cfg, profile)


def _apply_profile(cfg: ExperimentConfig, profile: ProfileConfig) -> ExperimentConfig:
    epochs = max(1, round(cfg.epochs * profile.epochs_scale))
    if profile.max_epochs is not None:
        epochs = min(epochs, profile.max_epochs)
    caps = {
        "max_train_images": _min_opt(cfg.max_train_images, profile.max_train_images),
        "eval_samples": min(cfg.eval_samples, profile.eval_samples),
        "n_fake": min(cfg.n_fake, profile.n_fake),
        "n_real": _min_opt(cfg.n_real, profile.n_real),
    }
    return cfg.model_copy(update={"epochs": epochs, **caps})


def _min_opt(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None
