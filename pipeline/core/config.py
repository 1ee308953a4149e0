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

from pipeline.data import prepare as data
from pipeline.core import registry
from pipeline import nets
from pipeline.data import official
from pipeline.core.errors import ConfigError
from pipeline.core.extractors import ExtractorName
from pipeline.nets.options import minibatch_bytes
from pipeline.core.schema import StrictModel, did_you_mean
from pipeline.core.sweeps import SHARED_KEYS, SweepConfig, expand

PARAMS_FILE = Path("params.yaml")


class ClassifierConfig(StrictModel):
    """The per-dataset CNN behind conditional accuracy, class coverage and the `classifier` extractor."""

    epochs: int = Field(default=15, ge=1)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=2e-3, gt=0)
    width: int = Field(default=32, ge=4)
    max_train_images: int | None = Field(default=None, ge=10)
    seed: int = Field(default=0, ge=0)


class DatasetConfig(StrictModel):
    source: str
    split: Literal["train", "test", "all", "unlabeled", "train+unlabeled"] = "train"  # the last two: stl10
    resolution: int | None = Field(default=None, ge=8, le=1024)
    channels: Literal[1, 3] | None = None
    max_images: int | None = Field(default=None, ge=1)
    path: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    classes: int | list[int] | None = None  # N: the first N classes of the class map; or a list of indices
    # What this data stands in for when a study was defined on other data (e.g. "CIFAR-10"): every
    # table, plot, MLflow run and metrics.json of its experiments says so. Names never lie.
    stands_in_for: str | None = None
    # Test accuracy the dataset classifier must reach for its metrics to count as reliable
    # (default: the source's, e.g. MNIST 0.97); below it, conditional accuracy and classifier FID are flagged.
    classifier_floor: float | None = Field(default=None, gt=0.0, le=1.0)
    # this dataset's classifier settings where they differ from metrics.classifier (e.g. fewer epochs
    # for an easy set); only the keys given here override
    classifier: ClassifierConfig | None = None

    @model_validator(mode="after")
    def _known_source(self) -> "DatasetConfig":
        if self.source not in official.SOURCES:
            raise ValueError(_unknown("source", self.source, official.SOURCES))
        data.check_options(self)
        return self


class ProfileConfig(StrictModel):
    """How a profile scales the experiments: quick proves the pipeline on a CPU, paper is full scale."""

    epochs_scale: float = Field(default=1.0, gt=0)
    max_epochs: int | None = Field(default=None, ge=1)
    max_train_images: int | None = Field(default=None, ge=1)
    # sample counts: set for every experiment that does not set its own (unset: the experiment's)
    eval_samples: int | None = Field(default=None, ge=2)
    n_fake: int | None = Field(default=None, ge=2)
    n_real: int | None = Field(default=None, ge=2)
    max_eval_every: int | None = Field(default=None, ge=1)  # evaluate during training at least this often
    max_log_every: int | None = Field(default=None, ge=1)  # iteration diagnostics at least this often
    classifier_epochs: int | None = Field(default=None, ge=1)  # overrides metrics.classifier.epochs
    classifier_max_images: int | None = Field(default=None, ge=10)


class MetricsConfig(StrictModel):
    extractors: list[ExtractorName] = ["effnet", "inception", "classifier"]
    inception_weights: str | None = None
    batch_size: int = Field(default=64, ge=1)
    kid_subset_size: int = Field(default=1000, ge=2)
    kid_subsets: int = Field(default=100, ge=1)  # KID is the mean over this many random subsets (torch-fidelity: 100)
    cache_dir: str = "data/fidelity_cache"
    cheap_extractor: ExtractorName = "effnet"
    classifier: ClassifierConfig = ClassifierConfig()


class LabelNoise(StrictModel):
    """D's targets drawn per sample from these ranges instead of 1 / 0 (e.g. real [0.7, 1.2], fake [0, 0.3])."""

    real: tuple[float, float]
    fake: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "LabelNoise":
        for name, (lo, hi) in (("real", self.real), ("fake", self.fake)):
            if lo > hi:
                raise ValueError(f"label_noise.{name}: low {lo} > high {hi}")
        return self


class AugmentConfig(StrictModel):
    """DiffAugment before D: `ops` applied to each real and generated image with probability p;
    `adaptive` moves p by `adaptive_step` per D update towards balancing D's confidence on real
    and generated images (up when it is surer of the reals), within [0, p_max]. `cutout_ratio`:
    side of the cutout square over the image side (DiffAugment 0.5; the official ProjectedGAN 0.2)."""

    ops: list[Literal["color", "translation", "cutout"]] = ["color", "translation", "cutout"]
    cutout_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    p: float = Field(default=1.0, ge=0.0, le=1.0)
    adaptive: bool = False
    adaptive_step: float = Field(default=0.001, gt=0.0, le=0.1)
    p_max: float = Field(default=0.8, gt=0.0, le=1.0)


class FeatureMatching(StrictModel):
    """G's objective from Salimans et al. 2016: squared distance between the batch-mean D features
    (block `layer` of D, -1 the last) of real and generated images, times `weight`; plus the
    adversarial loss when `adversarial`, plus `pixel_weight` x the squared distance of the mean
    images (the logo write-up's extra term)."""

    layer: int = -1
    weight: float = Field(default=1.0, gt=0.0)
    adversarial: bool = False
    pixel_weight: float = Field(default=0.0, ge=0.0)


MINIBATCH_MEMORY_LIMIT = 2 * 2**30  # bytes for minibatch discrimination's pairwise differences


class ExperimentConfig(StrictModel):
    """One training run, after merging `defaults` and applying the active profile."""

    study: str = Field(min_length=1)
    variant: str | None = None  # label in plots and tables; default: model/loss (+pretrain)
    sweep: str | None = None  # the sweep this experiment is a draw of (pipeline.core.sweeps), set by its expansion
    draw: int | None = Field(default=None, ge=0)  # its draw index: the same setting for every loss of the sweep
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
    z_mean: float = 0.0  # shift of the latent (the ACGAN write-up drew z ~ N(0.5, 1))
    label_noise: LabelNoise | None = None  # noisy D targets (BCE losses only)
    # a conditional G's labels in training: the real batch's (as the ACGAN write-up does, so an
    # imbalanced set keeps its label distribution) or drawn uniformly
    fake_labels: Literal["batch", "uniform"] = "batch"
    # the MNIST write-up's D step: G generates D's batch in inference mode (BatchNorm on running
    # statistics, dropout off) and D trains in inference mode; G then re-generates in training mode
    # for its own step (one more G forward per iteration)
    d_step_inference_mode: bool = False
    pretrain_classifier_epochs: int = Field(default=0, ge=0)  # D's class head on real data first (ACGAN)
    n_critic: int | None = Field(default=None, ge=1)  # D updates per G update (default: the loss's, wgan_gp 5)
    d_loss_threshold: float = 0.1  # D loss below this is flagged (d_loss_low): D wins outright
    augment: AugmentConfig | None = None  # differentiable augmentation before D (ProjectedGAN, few-shot)
    ema_decay: float | None = Field(default=None, gt=0.0, lt=1.0)  # EMA of G's weights for samples and metrics
    feature_matching: FeatureMatching | None = None  # Improved-GAN generator objective (dcgan)
    labeled_per_class: int | None = Field(default=None, ge=1)  # K+1 semi-supervised D: labels it may see
    # K+1 D: weight of the unlabelled (real vs generated) term beside the labelled cross-entropy;
    # 0.5 is Salimans et al.'s code (loss_lab + loss_unl, loss_unl = half the two BCE terms)
    unlabelled_weight: float = Field(default=0.5, gt=0)
    near_duplicates: bool = False  # evaluate: share of generated images with a near-identical neighbour
    model_args: dict[str, Any] = {}
    eval_every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)
    log_every: int = Field(default=50, ge=1)
    max_train_images: int | None = Field(default=None, ge=1)
    eval_samples: int = Field(default=1000, ge=2)
    n_fake: int = Field(default=10000, ge=2)
    n_real: int | None = Field(default=None, ge=2)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # autocast of the training step: fp32, bf16, or auto (bf16 where the device computes it
    # natively: benchmarks/results.json holds the speed and the fp32 / bf16 FID comparison)
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    compile: bool = False
    # > 1: train with DDP in this many processes (`python -m stages.train` starts them with torchrun;
    # one GPU each on CUDA). How a run is executed, not what it trains: not part of the fingerprint
    processes: int = Field(default=1, ge=1)
    extractors: list[ExtractorName] | None = None  # metric feature extractors for this experiment (default: metrics.extractors)
    # extractor of the per-epoch IS / FID that picks the best checkpoint (default: metrics.cheap_extractor);
    # `classifier`: the dataset classifier, also giving conditional accuracy per epoch
    cheap_extractor: ExtractorName | None = None

    @model_validator(mode="after")
    def _known_names(self) -> "ExperimentConfig":
        if self.model not in nets.FAMILIES:
            raise ValueError(_unknown("model", self.model, nets.FAMILIES))
        if self.loss not in registry.LOSSES:
            raise ValueError(_unknown("loss", self.loss, registry.LOSSES))
        family, loss = nets.FAMILIES[self.model], registry.LOSSES[self.loss]
        if self.label_noise is not None and not loss.soft_targets:
            raise ValueError(f"label_noise needs a BCE loss (minimax, non_saturating), not '{self.loss}'")
        if loss.gp_weight and family.batchnorm_in_d(self.model_args):
            raise ValueError(f"{self.loss} penalises per-sample gradients, which batch norm in D couples: "
                             f"use a model without it (dcgan with model_args.d_norm: layer or none, or mlp)")
        options = family.Options(**self.model_args) if _valid(family.Options, self.model_args) else None
        k_plus_1 = getattr(options, "head", None) == "k_plus_1"
        if k_plus_1 and self.labeled_per_class is None:
            raise ValueError("model_args.head k_plus_1 needs labeled_per_class (how many labels per class D sees)")
        if self.labeled_per_class is not None and not k_plus_1:
            raise ValueError("labeled_per_class only applies to a semi-supervised D (dcgan with model_args.head: k_plus_1)")
        if self.feature_matching is not None and not family.d_features:
            with_features = [name for name, f in nets.FAMILIES.items() if f.d_features]
            raise ValueError(f"feature_matching needs D's intermediate features, which model '{self.model}' does not "
                             f"expose: use {' or '.join(with_features)}")
        if getattr(options, "minibatch_b", 0):
            need = minibatch_bytes(self.batch_size, options.minibatch_b, options.minibatch_c)
            if need > MINIBATCH_MEMORY_LIMIT:
                raise ValueError(
                    f"minibatch discrimination with batch_size {self.batch_size}, B {options.minibatch_b}, "
                    f"C {options.minibatch_c} needs {need / 2**30:.1f} GiB for its batch^2 x B x C pairwise "
                    f"differences (limit {MINIBATCH_MEMORY_LIMIT / 2**30:.0f} GiB): lower batch_size, B or C")
        if self.pretrain_classifier_epochs and not family.class_head:
            raise ValueError(f"pretrain_classifier_epochs needs a model with a class head (acgan), not '{self.model}'")
        try:
            family.Options(**self.model_args)
        except ValidationError as exc:
            raise ValueError(f"model_args for '{self.model}': " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<args>'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
            )) from None
        return self

    def variant_label(self) -> str:
        if self.variant:
            return self.variant
        return f"{self.model}/{self.loss}" + ("+pretrain" if self.pretrain_classifier_epochs else "")

    def fingerprint(self) -> str:
        """Identifies what a checkpoint was trained with, so resume never mixes configs."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"processes"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StudyConfig(StrictModel):
    """What a study asks and what the configured scale can tell about it (printed in the report)."""

    question: str
    at_this_scale: str | None = None


class Params(StrictModel):
    profile: str
    profiles: dict[str, ProfileConfig]
    datasets: dict[str, DatasetConfig]
    defaults: dict[str, Any] = {}
    metrics: MetricsConfig = MetricsConfig()
    studies: dict[str, StudyConfig] = {}
    sweeps: dict[str, SweepConfig] = {}  # expanded into `experiments` by tools/expand_sweeps.py
    experiments: dict[str, Any]  # each entry is checked by resolve_experiment, with its key path

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        if self.profile not in self.profiles:
            raise ValueError(_unknown("profile", self.profile, self.profiles))
        for name, sweep in self.sweeps.items():
            for loss in sweep.losses:
                if loss not in registry.LOSSES:
                    raise ValueError(f"sweeps.{name}.losses: " + _unknown("loss", loss, registry.LOSSES))
            for key in sweep.space:
                if key not in ExperimentConfig.model_fields and key not in SHARED_KEYS:
                    known = [*ExperimentConfig.model_fields, *SHARED_KEYS]
                    raise ValueError(f"sweeps.{name}.space: " + _unknown("experiment key", key, known))
        return self


def sweep_experiments(name: str, sweep: SweepConfig, defaults: dict[str, Any]) -> dict[str, dict]:
    """Sweep `name`'s experiments entries (pipeline.core.sweeps.expand), with params.yaml's
    `defaults` over ExperimentConfig's for what its entries leave unset."""
    fields = {key: info.default for key, info in ExperimentConfig.model_fields.items() if not info.is_required()}
    return expand(name, sweep, {**fields, **defaults})


def _check_sweeps_expanded(params: Params, path: Path) -> None:
    """Each sweep's experiments in params.yaml are exactly its expansion (DVC reads them there)."""
    command = f"python tools/expand_sweeps.py {path}"
    for name, sweep in params.sweeps.items():
        present = {k: v for k, v in params.experiments.items() if isinstance(v, dict) and v.get("sweep") == name}
        if present != sweep_experiments(name, sweep, params.defaults):
            raise ConfigError(f"{path}: the experiments of sweeps.{name} are not its expansion (it was edited since, "
                              f"or never expanded): run `{command}`")
    orphans = sorted(k for k, v in params.experiments.items()
                     if isinstance(v, dict) and v.get("sweep") is not None and v["sweep"] not in params.sweeps)
    if orphans:
        raise ConfigError(f"{path}: experiments {', '.join(orphans[:3])}{' ...' if len(orphans) > 3 else ''} belong to "
                          f"a sweep no longer declared under `sweeps:`: run `{command}` to remove them")


def _valid(model: type[StrictModel], values: dict) -> bool:
    try:
        model(**values)
        return True
    except ValidationError:
        return False


def _unknown(kind: str, name: str, known) -> str:
    return f"unknown {kind} '{name}' ({did_you_mean(str(name), known)})"


def format_errors(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {path or '<top>'}: {msg}")
    return "\n".join(lines)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Parse and validate the whole params file, every experiment included, before any work.

    Nothing here needs a dataset to be present: a missing dataset fails only the stages that
    prepare it (and, through DVC, those that need it), with an error saying how to get it."""
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
        raise ConfigError(f"{path} is invalid:\n{format_errors(exc)}") from None
    _check_sweeps_expanded(params, path)
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
    missing = [k for k in ("study", "dataset", "model") if k not in entry]
    if missing:
        raise ConfigError(
            f"  experiments.{name}: must set {' and '.join(missing)} itself, not through defaults "
            "(dvc.yaml keys each train / evaluate stage on its own dataset and model family)"
        )
    merged = {"extractors": params.metrics.extractors, "cheap_extractor": params.metrics.cheap_extractor,
              **params.defaults, **entry}
    profile = params.profiles[params.profile]
    try:
        cfg = ExperimentConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, prefix=f"experiments.{name}")) from None
    if cfg.dataset not in params.datasets:
        raise ConfigError(f"  experiments.{name}.dataset: " + _unknown("dataset", cfg.dataset, params.datasets))
    channels, resolution = data.dataset_shape(resolve_dataset(params, cfg.dataset))
    family = nets.FAMILIES[cfg.model]
    problem = family.check_shape(channels, resolution)
    if problem:
        raise ConfigError(
            f"  experiments.{name}.model: '{cfg.model}' cannot make the images of dataset "
            f"'{cfg.dataset}' ({channels}x{resolution}x{resolution}): {problem}"
        )
    needs_labels = family.conditional or cfg.labeled_per_class is not None
    num_classes = data.dataset_num_classes(params.datasets[cfg.dataset]) if needs_labels else None
    if num_classes is not None and num_classes < 2:  # None: an image folder not there yet (prepare says so)
        what = ("its image folder has no class sub-folders (one sub-folder of images per class gives labels)"
                if params.datasets[cfg.dataset].source == "imagefolder" else "its split is unlabeled")
        raise ConfigError(
            f"  experiments.{name}.model: '{cfg.model}' is conditional or semi-supervised, but dataset "
            f"'{cfg.dataset}' has no labels: {what}"
        )
    return _apply_profile(cfg, profile, own=set(entry))


def resolve_classifier(params: Params, dataset: str) -> ClassifierConfig:
    """metrics.classifier <- datasets.<dataset>.classifier (the keys it sets) <- the active
    profile's overrides (a smoke profile: fewer epochs and images)."""
    profile = params.profiles[params.profile]
    own = resolve_dataset(params, dataset).classifier
    base = params.metrics.classifier.model_copy(update=own.model_dump(include=own.model_fields_set) if own else {})
    return base.model_copy(update={
        "epochs": profile.classifier_epochs or base.epochs,
        "max_train_images": _min_opt(base.max_train_images, profile.classifier_max_images),
    })


def _scaled_epochs(epochs: int, profile: ProfileConfig) -> int:
    scaled = max(1, round(epochs * profile.epochs_scale))
    return min(scaled, profile.max_epochs) if profile.max_epochs is not None else scaled


def _apply_profile(cfg: ExperimentConfig, profile: ProfileConfig, own: set[str]) -> ExperimentConfig:
    """Scale an experiment to the active profile. Sample counts (`eval_samples`, `n_fake`,
    `n_real`) are what the profile names, unless the experiment entry sets its own (`own`: the
    entry's keys); `max_*` keys are caps; epochs are scaled."""
    epochs = _scaled_epochs(cfg.epochs, profile)
    pretrain = _scaled_epochs(cfg.pretrain_classifier_epochs, profile) if cfg.pretrain_classifier_epochs else 0
    counts = {key: getattr(profile, key) for key in ("eval_samples", "n_fake", "n_real")
              if getattr(profile, key) is not None and key not in own}
    caps = {"max_train_images": _min_opt(cfg.max_train_images, profile.max_train_images), **counts}
    caps["eval_every"] = min(cfg.eval_every, profile.max_eval_every or cfg.eval_every)
    caps["log_every"] = min(cfg.log_every, profile.max_log_every or cfg.log_every)
    return cfg.model_copy(update={"epochs": epochs, "pretrain_classifier_epochs": pretrain, **caps})


def _min_opt(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None
