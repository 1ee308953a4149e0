"""The official datasets (MNIST, Fashion-MNIST, KMNIST, Kuzushiji-49, CIFAR-10, STL-10): their
files, checksums, decoders, class names and splits. SOURCES is the registry params.yaml's
`source:` names (validating it does not import torch)."""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipeline.core.errors import DataError
from pipeline.data.files import RemoteFile, candidate_paths, fetch, fetch_path, md5


def parse_idx(content: bytes, name: str) -> np.ndarray:
    """An idx1 (labels) or idx3 (images) ubyte payload as a uint8 array."""
    magic = int.from_bytes(content[:4], "big")
    if magic not in (2049, 2051):
        raise DataError(f"{name}: not an idx ubyte file (magic {magic})")
    ndim = magic - 2048
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(content) - offset != int(np.prod(dims)):
        raise DataError(f"{name}: header says {dims}, payload has {len(content) - offset} bytes")
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(dims).copy()  # writable


def parse_npz(content: bytes, name: str) -> np.ndarray:
    with np.load(io.BytesIO(content)) as npz:
        return npz["arr_0"]


@dataclass(frozen=True)
class Split:
    images: RemoteFile
    labels: RemoteFile


@dataclass(frozen=True)
class ArraySource:
    """A labelled dataset published as one images file and one labels file per split."""

    folders: tuple[str, ...]  # sub-folder names a copy may sit in (first: where downloads go)
    channels: int
    resolution: int
    splits: dict[str, Split]
    classes: tuple[str, ...] | RemoteFile  # names, or the class-map CSV that lists them
    parse: Callable[[bytes, str], np.ndarray]
    title: str  # how reports name it
    num_classes: int = 10
    # Test accuracy below which the dataset classifier trained on it is not trusted to judge
    # generated images (conditional accuracy, classifier FID): metrics from it are flagged.
    classifier_floor: float | None = None

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        files = self.splits[split]
        images = self.parse(fetch(files.images, self.folders), files.images.name)
        labels = self.parse(fetch(files.labels, self.folders), files.labels.name).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{files.images.name}: {len(images)} images but {files.labels.name} has {len(labels)} labels")
        return images.reshape(len(images), -1, self.resolution, self.resolution), labels

    def class_names(self) -> list[str]:
        if isinstance(self.classes, RemoteFile):  # index,codepoint,char
            rows = fetch(self.classes, self.folders).decode("utf-8").strip().splitlines()[1:]
            return [row.split(",")[2] for row in rows]
        return list(self.classes)


def _idx_split(base: str, prefix: str, md5s: tuple[str, str], content_md5s: tuple[str | None, str | None] = (None, None)):
    names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
    return Split(*(RemoteFile(n, (base + n,), m, c) for n, m, c in zip(names, md5s, content_md5s)))


def _npz_split(base: str, prefix: str, md5s: tuple[str, str]):
    names = (f"{prefix}-imgs.npz", f"{prefix}-labels.npz")
    return Split(*(RemoteFile(n, (base + n,), m) for n, m in zip(names, md5s)))


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_KMNIST = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
_K49 = "http://codh.rois.ac.jp/kmnist/dataset/k49/"

ARRAY_SOURCES: dict[str, ArraySource] = {
    "mnist": ArraySource(
        folders=("mnist",), channels=1, resolution=28, parse=parse_idx, classes=tuple("0123456789"),
        title="MNIST", classifier_floor=0.97,
        splits={
            "train": _idx_split(_MNIST, "train", ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432")),
            "test": _idx_split(_MNIST, "t10k", ("9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
                               ("2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")),
        },
    ),
    "fashion_mnist": ArraySource(
        folders=("fashion-mnist", "fashion_mnist"), channels=1, resolution=28, parse=parse_idx,
        title="Fashion-MNIST", classifier_floor=0.88,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        splits={
            "train": _idx_split(_FASHION, "train", ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe"),
                                ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9")),
            "test": _idx_split(_FASHION, "t10k", ("bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
                               ("8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965")),
        },
    ),
    "kmnist": ArraySource(
        folders=("kmnist",), channels=1, resolution=28, parse=parse_npz, title="Kuzushiji-MNIST",
        classifier_floor=0.93,
        classes=("お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を"),  # kmnist_classmap.csv
        splits={
            "train": _npz_split(_KMNIST, "kmnist-train", ("a183fbc01ed9a345513b145673d3d0bb", "b0e1d240e8afec72b50437fc3bc5908a")),
            "test": _npz_split(_KMNIST, "kmnist-test", ("dace6de62ca8b90843cc45366337d02e", "3ae489a79983d0fe386152684e3b5412")),
        },
    ),
    "k49": ArraySource(
        folders=("k49", "kuzushiji-49"), channels=1, resolution=28, parse=parse_npz, num_classes=49,
        title="Kuzushiji-49", classifier_floor=0.90,
        classes=RemoteFile("k49_classmap.csv", (_K49 + "k49_classmap.csv",), "f7d0d0391f68bdf0fe4cf160ceb85753"),
        splits={
            "train": _npz_split(_K49, "k49-train", ("7ac088b20481cf51dcd01ceaab89d821", "44a8e1b893f81e63ff38d73cad420f7a")),
            "test": _npz_split(_K49, "k49-test", ("d352e201d846ce6b94f42c990966f374", "4da6f7a62e67a832d5eb1bd85c5ee448")),
        },
    ),
}


@dataclass(frozen=True)
class Cifar10Source:
    """CIFAR-10 python version: the official archive, or its extracted cifar-10-batches-py/ folder.

    Either way each batch is checked against its official md5 (the archive's own hash would
    reject a re-packed but intact copy).
    """

    folders: tuple[str, ...] = ("cifar10", "cifar-10")
    channels: int = 3
    resolution: int = 32
    archive: RemoteFile = RemoteFile(
        "cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        "c58f30108f718f92721af3b95e74349a",
    )
    batches: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=lambda: {
        "train": (("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                  ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                  ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        "test": (("test_batch", "40351d587109b95175f43aff81a1287e"),),
    })
    classes: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    num_classes: int = 10
    title: str = "CIFAR-10"
    classifier_floor: float | None = None

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        members = self.batches[split]
        extracted = [p for p in candidate_paths(self.folders, "cifar-10-batches-py") if (p / members[0][0]).is_file()]
        if extracted:
            blobs = {name: RemoteFile(name, self.archive.urls, digest).check(extracted[0] / name) for name, digest in members}
        else:
            archive = fetch(RemoteFile(self.archive.name, self.archive.urls, None), self.folders,
                            also=", or extract it there (a cifar-10-batches-py/ folder)")
            blobs = {}
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:  # already gunzipped by fetch
                for name, digest in members:
                    blob = tar.extractfile(f"cifar-10-batches-py/{name}").read()
                    if md5(blob) != digest:
                        raise DataError(f"{self.archive.name}: member {name} has md5 {md5(blob)}, expected {digest}")
                    blobs[name] = blob
        images, labels = [], []
        for blob in blobs.values():
            batch = pickle.loads(blob, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    def class_names(self) -> list[str]:
        return list(self.classes)


UNLABELED = -1  # label of STL-10's unlabeled images


def parse_stl_images(blob: bytes) -> np.ndarray:
    """STL-10 binary images: N x 3 x 96 x 96 uint8, each channel stored column-major."""
    if len(blob) % (3 * 96 * 96):
        raise DataError(f"STL-10 image file of {len(blob)} bytes is not a whole number of 3 x 96 x 96 images")
    return np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)


@dataclass(frozen=True)
class Stl10Source:
    """STL-10 binary version: train (5,000 labelled), test (8,000), unlabeled (100,000) at 96 px.

    GAN baselines train on train+unlabeled resized to 48 px, the default resolution here. The
    archive (2.5 GB) is verified by its official md5 while streaming; its members are read one
    at a time. Unlabeled images get the label -1 (UNLABELED).
    """

    folders: tuple[str, ...] = ("stl10", "stl-10")
    channels: int = 3
    resolution: int = 48
    archive: RemoteFile = RemoteFile(
        "stl10_binary.tar.gz", ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
        "91f7769df0f17e558f3565bffb0c7dfb",
    )
    classes: tuple[str, ...] = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
    num_classes: int = 10
    title: str = "STL-10"
    classifier_floor: float | None = None
    members: dict[str, tuple[str, str | None]] = field(default_factory=lambda: {
        "train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
        "unlabeled": ("unlabeled_X.bin", None),
    })

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        parts = split.split("+")
        path = fetch_path(self.archive, self.folders)
        wanted = {f"stl10_binary/{m}": m for part in parts for m in self.members[part] if m}
        blobs = {}
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    blobs[wanted[member.name]] = tar.extractfile(member).read()
        missing = sorted(set(wanted.values()) - set(blobs))
        if missing:
            raise DataError(f"{path}: members {missing} missing from the archive")
        images, labels = [], []
        for part in parts:
            x_name, y_name = self.members[part]
            x = parse_stl_images(blobs.pop(x_name))
            y = np.frombuffer(blobs.pop(y_name), dtype=np.uint8).astype(np.int64) - 1 if y_name \
                else np.full(len(x), UNLABELED, dtype=np.int64)
            images.append(x)
            labels.append(y)
        return np.concatenate(images), np.concatenate(labels)

    def class_names(self) -> list[str]:
        return list(self.classes)


SOURCES: dict[str, object] = {**ARRAY_SOURCES, "cifar10": Cifar10Source(), "stl10": Stl10Source(), "imagefolder": None}
SPLITS = {"stl10": ("train", "test", "unlabeled", "train+unlabeled")}  # others: train, test, all


