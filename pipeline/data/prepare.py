"""Dataset preparation: any source (pipeline.datasets: official files found or downloaded and
verified, or an image folder) into uint8 arrays, with the options params.yaml gives a dataset
(split, holdout, classes, resolution, max_images).

`prepare_dataset` writes ``data/prepared/<dataset>/``::

    images.npy        uint8 N x C x H x W (the training images)
    labels.npy        int64 N
    test_images.npy   uint8, test_labels.npy int64: held-out real images (official test split, or `holdout`)
    meta.json         source, options, shapes, class names, content hash (keys metric caches)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.folders import IMAGE_SUFFIXES, load_image_folder
from pipeline.data.official import SOURCES, SPLITS
from pipeline.core.layout import atomic_write

if TYPE_CHECKING:
    import torch
# torch is imported by the functions that convert or load images: validating params.yaml reads
# this module's registry of sources without it.

SUBSET_SEED = 0  # max_images / holdout draws: fixed, so every experiment sees the same images


# ----- options --------------------------------------------------------------------------------
def check_options(cfg) -> None:
    """Source-specific checks of a DatasetConfig; ValueError names the option (shown under its key path)."""
    if cfg.source == "imagefolder":
        missing = [k for k in ("path", "resolution") if getattr(cfg, k) is None]
        if missing:
            raise ValueError(f"imagefolder needs {' and '.join(missing)}")
        if cfg.split == "test":
            raise ValueError("imagefolder has no test split: use split: all and `holdout` to keep images aside")
    elif cfg.path is not None:
        raise ValueError(f"path only applies to source imagefolder, not '{cfg.source}'")
    elif cfg.split not in SPLITS.get(cfg.source, ("train", "test", "all")):
        raise ValueError(f"split '{cfg.split}' does not exist for {cfg.source}: "
                         f"{', '.join(SPLITS.get(cfg.source, ('train', 'test', 'all')))}")
    elif cfg.classes is not None and "unlabeled" in cfg.split:
        raise ValueError(f"classes cannot select from the unlabeled images of split '{cfg.split}'")
    else:
        class_selection(cfg.classes, SOURCES[cfg.source].num_classes)


def class_selection(classes: int | list[int] | None, available: int) -> list[int]:
    """Source class indices the `classes` option keeps, in the order they become labels 0..N-1.

    An integer N keeps the first N classes of the source's class map (for Kuzushiji-49:
    あ い う え お ...); a list keeps exactly those indices.
    """
    if classes is None:
        return list(range(available))
    if isinstance(classes, int):
        if not 2 <= classes <= available:
            raise ValueError(f"classes: {classes} is not between 2 and the {available} classes the source has")
        return list(range(classes))
    bad = [c for c in classes if not 0 <= c < available]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes: need at least 2 distinct indices in 0..{available - 1}, got {classes}")
    return list(classes)


def select_classes(labels: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the rows whose label is kept, labels re-indexed to 0..len(keep)-1)."""
    lookup = np.full(max(int(labels.max()) + 1, max(keep) + 1), -1, dtype=np.int64)
    lookup[keep] = np.arange(len(keep))
    new = lookup[labels]
    return new >= 0, new


def dataset_shape(cfg) -> tuple[int, int]:
    """(channels, resolution) of the prepared images, known before anything is read."""
    source = SOURCES[cfg.source]
    channels = cfg.channels or (source.channels if source else 3)
    return channels, cfg.resolution or source.resolution


def dataset_num_classes(cfg) -> int | None:
    """Number of labels the prepared set will have; for image folders, its sub-folders with images
    (None while the folder does not exist: the prepare stage says how to provide it)."""
    if cfg.source == "imagefolder":
        root = Path(cfg.path).expanduser()
        if not root.is_dir():
            return None
        subdirs = [d for d in root.iterdir() if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*"))]
        available = max(1, len(subdirs))
        return len(class_selection(cfg.classes, available)) if cfg.classes is not None and available > 1 else available
    if "unlabeled" in cfg.split:
        return 1  # mostly unlabeled images: nothing for a conditional model or a class subset
    return len(class_selection(cfg.classes, SOURCES[cfg.source].num_classes))


# ----- preparation ----------------------------------------------------------------------------
def convert(images: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    """uint8 N x C x H x W to the requested channels (grey repeated / ITU-R 601 luma) and size (antialiased)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        out = []
        for part in x.split(4096):  # bounded memory for the float copy
            y = F.interpolate(part.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
            out.append(y.round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return x.contiguous().numpy()


def subset(n: int, keep: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of size `keep`."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def load_source(cfg) -> dict:
    """Raw arrays of the configured split (+ test part), class names; nothing converted yet."""
    if cfg.source == "imagefolder":
        images, labels, classes = load_image_folder(cfg)
        return {"images": images, "labels": labels, "test": None, "classes": classes}
    source = SOURCES[cfg.source]
    if cfg.split == "all":
        parts = [source.load(s) for s in ("train", "test")]
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        test = None
    else:
        images, labels = source.load(cfg.split)
        test = source.load("test") if cfg.split.startswith("train") and cfg.holdout == 0 else None
    return {"images": images, "labels": labels, "test": test, "classes": source.class_names()}


def content_hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def source_title(cfg) -> str:
    return f"image folder {cfg.path}" if cfg.source == "imagefolder" else SOURCES[cfg.source].title


def classifier_floor(cfg) -> float | None:
    """The dataset's own `classifier_floor`, else its source's (None: no floor is known)."""
    if cfg.classifier_floor is not None:
        return cfg.classifier_floor
    return None if cfg.source == "imagefolder" else SOURCES[cfg.source].classifier_floor


def describe(cfg, num_images: int, num_test: int, classes: list[str]) -> str:
    """What the prepared data really is, in words: every report and run says it."""
    split = "" if cfg.source == "imagefolder" else f" {cfg.split} split"
    kept = f", first {len(classes)} classes" if cfg.classes is not None else ""
    channels, resolution = dataset_shape(cfg)
    held = f" / {num_test:,} held out" if num_test else ""
    return (f"{source_title(cfg)}{split}{kept}: {num_images:,} training images{held}, "
            f"{resolution} px, {'RGB' if channels == 3 else 'grey'}")


def identity(dataset: str, meta: dict) -> dict:
    """Which data a run really used and what it stands in for (from the prepared meta.json): part
    of every output, so a stand-in never passes for the set it replaces."""
    return {"dataset": dataset, "data": meta.get("description", dataset), "stands_in_for": meta.get("stands_in_for")}


def prepare_dataset(cfg, out_dir: Path, name: str | None = None) -> dict:
    """Read, verify, subset, convert and write one dataset; the folder appears complete or not at all.
    A DataError names the dataset (`name`) as well as the file."""
    try:
        return _prepare(cfg, Path(out_dir))
    except DataError as exc:
        if name is None:
            raise
        raise DataError(f"dataset '{name}' ({source_title(cfg)}) cannot be prepared: {exc}") from None


def _prepare(cfg, out_dir: Path) -> dict:
    channels, resolution = dataset_shape(cfg)
    raw = load_source(cfg)
    images, labels, test, classes = raw["images"], raw["labels"], raw["test"], raw["classes"]
    if cfg.classes is not None:
        try:
            keep = class_selection(cfg.classes, len(classes))
        except ValueError as exc:
            raise DataError(f"{cfg.path or cfg.source}: {exc}") from None
        classes = [classes[i] for i in keep]
        mask, labels = select_classes(labels, keep)
        images, labels = images[mask], labels[mask]
        if test is not None:
            test_mask, test_labels = select_classes(test[1], keep)
            test = (test[0][test_mask], test_labels[test_mask])
    if cfg.max_images is not None and cfg.max_images < len(images):
        keep = subset(len(images), cfg.max_images, SUBSET_SEED)
        images, labels = images[keep], labels[keep]
    if cfg.holdout > 0:
        n_test = max(1, round(len(images) * cfg.holdout))
        is_test = np.zeros(len(images), dtype=bool)
        is_test[subset(len(images), n_test, SUBSET_SEED + 1)] = True
        test = (images[is_test], labels[is_test])
        images, labels = images[~is_test], labels[~is_test]
    arrays = {"images": convert(images, channels, resolution), "labels": labels}
    if test is not None:
        arrays.update(test_images=convert(test[0], channels, resolution), test_labels=test[1].astype(np.int64))
    meta = {
        "source": cfg.source, "options": cfg.model_dump(mode="json", exclude={"classifier"}),  # not the data's
        "description": describe(cfg, len(arrays["images"]), len(arrays.get("test_images", [])), classes),
        "stands_in_for": cfg.stands_in_for, "classifier_floor": classifier_floor(cfg),
        "num_images": len(arrays["images"]), "num_test_images": len(arrays.get("test_images", [])),
        "channels": channels, "resolution": resolution, "classes": classes,
        "class_counts": np.bincount(labels[labels >= 0], minlength=len(classes)).tolist(),
        "num_unlabeled": int((labels < 0).sum()),
        "content_hash": content_hash(arrays["images"], arrays["labels"]),
    }

    def write(staging: Path) -> None:
        staging.mkdir(parents=True)
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    atomic_write(out_dir, write)
    return meta


@dataclass
class Prepared:
    """A prepared dataset in memory (uint8 N x C x H x W images, int64 labels)."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]


def load_prepared(folder: Path) -> Prepared:
    import torch

    folder = Path(folder)
    if not (folder / "meta.json").is_file():
        raise DataError(f"{folder} is not a prepared dataset: run `dvc repro prepare@{folder.name}` first")
    arrays = {}
    for name in ("images", "labels", "test_images", "test_labels"):
        path = folder / f"{name}.npy"
        arrays[name] = torch.from_numpy(np.load(path)) if path.is_file() else None
    return Prepared(arrays["images"], arrays["labels"], json.loads((folder / "meta.json").read_text()),
                    arrays["test_images"], arrays["test_labels"])
