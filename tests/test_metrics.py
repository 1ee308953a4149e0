"""Metrics on real data: the effnet extractor must rank real distributions sensibly, agree with an
independent FID, cache real statistics by key, and skip (never fake) an unavailable Inception.

Everything runs offline on CPU; the effnet features of ~4,000 28x28 images are the main cost.
"""
from __future__ import annotations

import glob
import gzip
import importlib.util
import math
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.linalg
import torch

from pipeline.core import extractors
from pipeline.evaluate import metrics
from pipeline.evaluate.backbones import (
    EFFNET_INPUT_SIZE,
    _map_state_dict,
    effnet_preprocess,
    efficientnet_lite_weights_path,
    fold_batchnorm,
    load_efficientnet_lite,
)
from pipeline.core.errors import ExtractorUnavailable
from pipeline.evaluate.metrics import compute_metrics

N = 500  # images per set: enough for stable effnet FID ordering, small enough for a CPU test
DAISY = 985  # ImageNet class index of "daisy"


def read_idx_images(path: Path, count: int) -> torch.Tensor:
    """First `count` images of an idx3-ubyte.gz file as uint8 N x 1 x H x W (magic checked)."""
    with gzip.open(path, "rb") as f:
        header = f.read(16)
        magic, n, h, w = (int.from_bytes(header[i : i + 4], "big") for i in range(0, 16, 4))
        assert magic == 2051, f"{path}: not an idx3 image file (magic {magic})"
        count = min(count, n)
        data = np.frombuffer(f.read(count * h * w), dtype=np.uint8)
    return torch.from_numpy(data.reshape(count, 1, h, w).copy())


@pytest.fixture(scope="module")
def images(embedded) -> dict[str, torch.Tensor]:
    """Two disjoint slices of the Fashion-MNIST test set ("fm_ref": the real reference, "fm_other":
    another sample of the same distribution), MNIST, and noise."""
    gen = torch.Generator().manual_seed(0)
    fashion = read_idx_images(embedded / "fashion-mnist" / "t10k-images-idx3-ubyte.gz", 2 * N)
    return {
        "fm_ref": fashion[:N],
        "fm_other": fashion[N:],
        "mnist": read_idx_images(embedded / "mnist" / "t10k-images-idx3-ubyte.gz", N),
        "noise": torch.randint(0, 256, (N, 1, 28, 28), dtype=torch.uint8, generator=gen),
    }


@pytest.fixture(scope="module")
def effnet_runs(images, tmp_path_factory):
    """compute_metrics of each fake set against the same real set (a Fashion-MNIST test slice), one cache."""
    cache = tmp_path_factory.mktemp("fidelity_cache")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse offline guard
        mp.setenv("GANLAB_OFFLINE", "1")
        for name in ("fm_other", "noise", "mnist", "fm_ref"):
            runs[name] = compute_metrics(
                images[name], images["fm_ref"], extractors=["effnet"], cache_dir=cache
            )
    return cache, runs


def fid(runs, name) -> float:
    result, skipped = runs[name]
    assert skipped == {}
    return result["fid_effnet"]


def test_effnet_fid_ranks_real_distributions(effnet_runs):
    _, runs = effnet_runs
    same_dist = fid(runs, "fm_other")  # another Fashion-MNIST slice vs the reference slice
    noise, mnist, itself = fid(runs, "noise"), fid(runs, "mnist"), fid(runs, "fm_ref")
    print(f"effnet FID: fmnist test={same_dist:.4f} noise={noise:.4f} mnist={mnist:.4f} self={itself:.3g}")
    assert all(math.isfinite(v) for v in (same_dist, noise, mnist, itself))
    assert 0 < same_dist < noise / 5
    assert same_dist < mnist / 3
    assert abs(itself) < 1e-3  # same features both sides: only the eigenvalue numerics remain
    for name in runs:
        result, _ = runs[name]
        assert set(result) == {"is_effnet", "fid_effnet", "kid_effnet"}
    assert runs["fm_other"][0]["kid_effnet"] < runs["noise"][0]["kid_effnet"]


def test_fid_matches_independent_computation(images, effnet_runs):
    """Same features, own statistics (float64) and scipy's sqrtm: checks torch-fidelity's FID plumbing."""
    _, runs = effnet_runs
    extractor = metrics.EffnetLite0Extractor("effnet", ["1280"])

    def features(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = [extractor(batch.expand(-1, 3, -1, -1))[0] for batch in x.split(64)]
        return torch.cat(out).double().numpy()

    f1, f2 = features(images["fm_other"]), features(images["fm_ref"])
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():  # N=500 < 1280 dims: the covariances are singular by construction
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    independent = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    fidelity = fid(runs, "fm_other")
    print(f"FID independent={independent:.8f} torch-fidelity={fidelity:.8f} diff={independent - fidelity:.3g}")
    assert independent == pytest.approx(fidelity, rel=1e-4)


def test_real_features_cached_by_the_exact_images(images, effnet_runs):
    """One cache file per real set, keyed by the sha256 of its images: the same tensor reuses it
    (no recomputation), a set differing in a single pixel gets its own features and numbers."""
    cache, runs = effnet_runs
    cached = sorted(cache.iterdir())
    assert [p.name.split("-")[:3] for p in cached] == [["real", "effnet", "lite0v1"]] and cached[0].name.endswith("-n500.pt")
    stamp = cached[0].stat().st_mtime_ns
    metrics._REAL_MEMO.clear()  # a new process: only the disk cache is left
    again, skipped = compute_metrics(images["fm_other"], images["fm_ref"], extractors=["effnet"], cache_dir=cache)
    assert skipped == {} and again == runs["fm_other"][0]
    assert sorted(cache.iterdir()) == cached and cached[0].stat().st_mtime_ns == stamp
    other_reference = images["fm_ref"].clone()
    other_reference[0, 0, 14, 14] ^= 0xFF
    changed, _ = compute_metrics(images["fm_other"], other_reference, extractors=["effnet"], cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    assert changed["fid_effnet"] != again["fid_effnet"]


def test_in_memory_metrics_equal_torch_fidelitys_calculate_metrics(images, tmp_path):
    """The in-memory path (features once, torch-fidelity's metric functions) gives exactly what
    torch_fidelity.calculate_metrics gives for the same images and extractor."""
    import torch_fidelity

    fake, real = images["fm_other"][:120], images["fm_ref"][:150]
    ours, skipped = compute_metrics(fake, real, extractors=["effnet"], cache_dir=tmp_path / "c", kid_subset_size=100)
    theirs = torch_fidelity.calculate_metrics(
        input1=metrics._ImageTensorDataset(fake), input2=metrics._ImageTensorDataset(real), isc=True, fid=True,
        kid=True, feature_extractor="effnet", cuda=False, batch_size=64, isc_splits=10, kid_subset_size=100,
        rng_seed=metrics.RNG_SEED, samples_shuffle=True, save_cpu_ram=True, cache=False, verbose=False)
    assert skipped == {}
    assert ours["is_effnet"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_ISC_MEAN], rel=1e-9)
    assert ours["fid_effnet"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-9)
    assert ours["kid_effnet"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-9)


def test_inception_offline_without_weights_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    result, skipped = compute_metrics(
        x, x, extractors=["inception"], cache_dir=tmp_path / "cache"
    )
    assert result == {}
    assert str(expected) in skipped["inception"]
    assert metrics.URL_INCEPTION_V3 in skipped["inception"]
    assert not (tmp_path / "cache").exists()  # skipped before any work


def test_inception_explicit_missing_or_corrupt_weights(tmp_path):
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    missing = tmp_path / "nowhere" / "inception.pth"
    _, skipped = compute_metrics(
        x, x, extractors=["inception"], cache_dir=tmp_path, inception_weights=str(missing)
    )
    assert str(missing) in skipped["inception"]
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    _, skipped = compute_metrics(
        x, x, extractors=["inception"], cache_dir=tmp_path, inception_weights=str(corrupt)
    )
    assert str(corrupt) in skipped["inception"]


def test_skipped_extractor_gives_no_number_while_others_run(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    fake, real = images["fm_other"][:16], images["fm_ref"][:16]
    result, skipped = compute_metrics(
        fake, real, extractors=["inception", "effnet"], cache_dir=tmp_path / "c",
        kid_subset_size=1000,  # clipped to 16
    )
    assert set(skipped) == {"inception"}
    assert set(result) == {"is_effnet", "fid_effnet", "kid_effnet"}
    assert all(math.isfinite(v) for v in result.values())
    # FID alone (the per-epoch cheap metric) takes torch-fidelity's statistics-only path: same number.
    fid_only, skipped = compute_metrics(
        fake, real, extractors=["effnet"], cache_dir=tmp_path / "c", isc=False, kid=False
    )
    assert skipped == {} and fid_only == {"fid_effnet": pytest.approx(result["fid_effnet"], rel=1e-9)}


@pytest.fixture
def random_inception_weights(tmp_path) -> Path:
    """A structurally valid but random Inception state_dict (plumbing only: its numbers mean nothing)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fi

    with mock.patch.object(fi, "load_state_dict_from_url", lambda *a, **k: None), mock.patch.object(
        fi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None
    ):
        net = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_runs_with_explicit_weights_file(random_inception_weights, tmp_path):
    gen = torch.Generator().manual_seed(1)
    fake = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8, generator=gen)
    real = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=gen)
    result, skipped = compute_metrics(
        fake, real, extractors=["inception"], cache_dir=tmp_path / "c",
        inception_weights=str(random_inception_weights),
    )
    assert skipped == {}
    assert set(result) == {"is_inception", "fid_inception", "kid_inception"}
    assert all(math.isfinite(v) for v in result.values())
    cached = [p.name for p in (tmp_path / "c").iterdir()]
    assert len(cached) == 1 and cached[0].startswith("real-inception-w"), cached  # the weights name the cache


def test_inception_score_effnet(images, effnet_runs, tmp_path):
    _, runs = effnet_runs
    real_is = runs["fm_other"][0]["is_effnet"]
    grey = torch.full((40, 1, 28, 28), 128, dtype=torch.uint8)
    result, skipped = compute_metrics(
        grey, grey, extractors=["effnet"], cache_dir=tmp_path, fid=False, kid=False
    )
    assert skipped == {} and set(result) == {"is_effnet"}
    grey_is = result["is_effnet"]
    print(f"effnet IS: fashion-mnist={real_is:.4f} constant grey={grey_is:.6f}")
    assert math.isfinite(real_is) and real_is >= 1
    assert grey_is == pytest.approx(1.0, abs=1e-6)  # identical images: every split's KL is 0
    assert real_is > grey_is + 0.5
    assert not any(tmp_path.iterdir())  # IS alone touches no real set and caches nothing


def test_bad_arguments():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown extractor 'vgg'.*classifier, effnet, inception"):
        compute_metrics(x, x, extractors=["vgg"], cache_dir=Path("/nonexistent"))
    with pytest.raises(ValueError, match="uint8"):
        compute_metrics(x.float(), x, extractors=["effnet"], cache_dir=Path("/nonexistent"))
    assert list(extractors.EXTRACTORS) == ["effnet", "inception", "classifier"]
    assert extractors.quoted_first() == ["inception", "effnet", "classifier"]  # the papers' numbers first


def test_register_is_idempotent():
    metrics.register_extractors()
    metrics.register_extractors()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert FEATURE_EXTRACTORS_REGISTRY["effnet"] is metrics.EffnetLite0Extractor
    assert FEATURE_EXTRACTORS_REGISTRY["ganlab-classifier"] is metrics.ClassifierExtractor


def find_flower_jpg() -> Path | None:
    """sklearn's sample image: the installed package first, else any Python's site-packages on disk."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "images" / "flower.jpg"
        if path.is_file():
            return path
    patterns = [
        "/usr/lib/python3*/**/sklearn/datasets/images/flower.jpg",
        "/usr/local/lib/python3*/**/sklearn/datasets/images/flower.jpg",
        str(Path.home() / ".pyenv/versions/*/lib/python3*/site-packages/sklearn/datasets/images/flower.jpg"),
        str(Path(sys.base_prefix) / "lib/python3*/site-packages/sklearn/datasets/images/flower.jpg"),
    ]
    for pattern in patterns:
        hits = sorted(glob.glob(pattern, recursive=True))
        if hits:
            return Path(hits[0])
    return None


@pytest.mark.parametrize("variant", [0, 1])
def test_efficientnet_lite_classifies_daisy(variant):
    from PIL import Image

    path = find_flower_jpg()
    if path is None:
        pytest.skip("sklearn's flower.jpg not found (no scikit-learn installed in any Python on this machine)")
    img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    h, w = img.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = effnet_preprocess(img[None, :, top : top + side, left : left + side].contiguous(), variant)
    assert x.shape == (1, 3, EFFNET_INPUT_SIZE[variant], EFFNET_INPUT_SIZE[variant])
    assert -1 <= x.min() and x.max() <= 1
    net = load_efficientnet_lite(variant, with_classifier=True)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == DAISY, logits.topk(5)
    if variant == 0:  # headless variant: the pooled 1280 features the classifier reads
        trunk = load_efficientnet_lite(0, with_classifier=False)
        with torch.no_grad():
            feats = trunk(x)
        assert feats.shape == (1, 1280)
        torch.testing.assert_close(net.get_classifier()(feats), logits, rtol=1e-4, atol=1e-4)
        # The metric extractor folds BatchNorm into the convs: same function up to float rounding.
        folded = fold_batchnorm(load_efficientnet_lite(0, with_classifier=True))
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x), logits, rtol=1e-4, atol=1e-3)


def test_weights_mapping_rejects_mismatch():
    import timm

    path = efficientnet_lite_weights_path(0)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    first = next(iter(source))
    source[first] = source[first][:1]
    with pytest.raises(ExtractorUnavailable, match="conv_stem.weight"):
        _map_state_dict(source, target, path)
    with pytest.raises(ExtractorUnavailable, match="tensors"):
        _map_state_dict(dict(list(source.items())[:-1]), target, path)


def test_heldout_fid_penalises_a_generator_that_copies_its_training_images(tmp_path, monkeypatch):
    """evaluate_run with a "generator" returning exact copies of the training images: near-zero FID
    against the training images, far higher against the held-out ones (real MNIST, effnet, 120 each).
    Held-out metrics computed against the training images would be near zero too."""
    import json
    from types import SimpleNamespace

    from pipeline.data import prepare as data
    from pipeline.evaluate import run as evaluation
    from pipeline.core.config import DatasetConfig, ExperimentConfig, MetricsConfig
    from pipeline.core.rundir import RunDir

    data.prepare_dataset(DatasetConfig(source="mnist", split="test", max_images=240, holdout=0.5), tmp_path / "mnist")
    prepared = data.load_prepared(tmp_path / "mnist")
    assert len(prepared.images) == len(prepared.test_images) == 120
    copies = prepared.images[torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    monkeypatch.setattr(evaluation, "generate", lambda G, n, cfg, **kw: copies[:n])
    monkeypatch.setattr(evaluation, "load_checkpoint", lambda path: SimpleNamespace(state={}, generator=lambda d: None))
    paths = RunDir(tmp_path / "run")
    paths.root.mkdir()
    paths.summary.write_text(json.dumps({"best_epoch": 1, "epochs": 1}))
    cfg = ExperimentConfig(study="t", model="mlp", dataset="mnist", loss="non_saturating", seed=0, epochs=1, batch_size=8,
                           lr_g=1e-4, lr_d=1e-4, z_dim=4, n_fake=120, extractors=["effnet"], device="cpu")
    metrics_cfg = MetricsConfig(cache_dir=str(tmp_path / "cache"), kid_subsets=5)

    results, skipped, _ = evaluation.evaluate_run(cfg, prepared, paths, metrics_cfg)
    assert skipped == {"class_metrics": "no dataset classifier at None"}
    print(f"copies of the training images: FID {results['fid_effnet']:.3g} vs training, "
          f"{results['fid_effnet_heldout']:.3g} vs held-out")
    assert results["fid_effnet"] < 1e-3 < 10 < results["fid_effnet_heldout"]
    # KID of 120 images is near noise level: copies of the reference sit below 0 (its unbiased estimate)
    assert results["kid_effnet_heldout"] > results["kid_effnet"] + 1e-3
    assert results["best_fid_effnet_heldout"] == results["fid_effnet_heldout"]  # the best checkpoint is the final one
    assert results["n_heldout"] == 120 and results["heldout"].startswith("120 held-out images (holdout 0.5")
    assert "is_effnet_heldout" not in results  # IS has no reference set

    data.prepare_dataset(DatasetConfig(source="mnist", split="test", max_images=120), tmp_path / "whole")
    results, _, _ = evaluation.evaluate_run(cfg, data.load_prepared(tmp_path / "whole"), paths, metrics_cfg)
    assert results["heldout"] == "none: dataset has no holdout (split test, holdout 0.0)"  # said so, no number
    assert not any(k.endswith("_heldout") for k in results) and "n_heldout" not in results
