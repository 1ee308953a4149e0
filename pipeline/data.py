"""Dataset registry: find, verify and decode the official files, and prepare uint8 arrays.

Every file is looked up in the data folders (`pipeline.env.data_dirs()`: $GANLAB_DATA_DIRS,
data/raw/, /usr/share/datasets/), directly or in a per-source sub-folder, and downloaded from
its official URL only when no copy exists (never with GANLAB_OFFLINE=1). Each copy is checked
against the official checksum of its *decoded* content where that is known (the decompressed
bytes of a .gz, so Debian's re-compressed Fashion-MNIST passes) and of the published file
otherwise. A mismatch is an error naming the file and both hashes.

`prepare_dataset` writes ``data/prepared/<dataset>/``::

    images.npy        uint8 N x C x H x W (the training images)
    labels.npy        int64 N
    test_images.npy   uint8, test_labels.npy int64: held-out real images (official test split, or `holdout`)
    meta.json         source, options, shapes, class names, content hash (keys metric caches)
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline import progress
from pipeline.env import DATA_DIRS_ENV, EMBEDDED_DIR, OFFLINE_ENV, RAW_DIR, data_dirs, offline
from pipeline.errors import DataError
from pipeline.layout import atomic_write

if TYPE_CHECKING:
    import torch
# torch is imported by the functions that convert or load images: validating params.yaml reads
# this module's registry of sources without it.

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUBSET_SEED = 0  # max_images / holdout draws: fixed, so every experiment sees the same images


# ----- files ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it comes from and what it must contain."""

    name: str
    urls: tuple[str, ...]
    md5: str | None  # of the file as published
    content_md5: str | None = None  # of its decompressed bytes (.gz): survives re-compression

    def decode(self, raw: bytes) -> bytes:
        return gzip.decompress(raw) if self.name.endswith(".gz") else raw

    def check(self, path: Path) -> bytes:
        """The file's decoded bytes, or DataError naming the file and both hashes."""
        raw = path.read_bytes()
        try:
            content = self.decode(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot be decompressed ({exc}); delete it or replace it with the file from {self.urls[0]}")
        if self.content_md5:
            kind, expected, actual = "decompressed content", self.content_md5, md5(content)
        else:
            kind, expected, actual = "file", self.md5, md5(raw)
        if expected and actual != expected:
            raise DataError(f"{path}: md5 of the {kind} is {actual}, expected {expected} (corrupt or a different file)")
        return content


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def candidate_paths(folders: tuple[str, ...], name: str) -> list[Path]:
    """Every place a file may already be: each data folder, its per-source sub-folders first."""
    return [d / sub / name for d in data_dirs() for sub in (*folders, "")]


def fetch(file: RemoteFile, folders: tuple[str, ...], also: str = "") -> bytes:
    """Decoded, verified bytes of `file`: the first local copy that checks out, else a download.
    `also`: other ways to provide it, for the error message."""
    return _first_verified(file, folders, file.check, also)


def fetch_path(file: RemoteFile, folders: tuple[str, ...]) -> Path:
    """Path of a verified copy of `file`, hashed in chunks: for archives too large to hold in memory."""

    def check(path: Path) -> Path:
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
        if digest.hexdigest() != file.md5:
            raise DataError(f"{path}: md5 of the file is {digest.hexdigest()}, expected {file.md5} (corrupt or a different file)")
        return path

    return _first_verified(file, folders, check)


def _first_verified(file: RemoteFile, folders: tuple[str, ...], check: Callable, also: str = ""):
    failures = []
    tried = list(dict.fromkeys(candidate_paths(folders, file.name)))
    for path in tried:
        if path.is_file():
            try:
                verified = check(path)
            except DataError as exc:
                failures.append(str(exc))
                continue
            for failure in failures:  # the content used is the verified one, but say what was passed over
                print(f"ganlab: warning: skipped a bad copy, using {path} instead: {failure}", file=sys.stderr)
            return verified
    if failures:  # copies exist but none is right: say so rather than silently downloading over them
        raise DataError("\n".join(failures))
    looked = "\n".join(f"    {p}" for p in tried)
    get = (f"download {file.urls[0]} into {RAW_DIR / folders[0]}/ (or into a folder listed in ${DATA_DIRS_ENV})"
           f"{also}")
    if offline():
        raise DataError(f"{file.name} not found, and downloads are off ({OFFLINE_ENV}=1). Looked in:\n{looked}\n"
                        f"  To get it: {get}, or run without {OFFLINE_ENV}=1 to download it.")
    try:
        return check(download(file, RAW_DIR / folders[0]))
    except DataError as exc:
        raise DataError(f"{exc}\n  Not found locally either; looked in:\n{looked}\n  To get it: {get}.") from None


def _fetch(url: str, path: Path, name: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def download(file: RemoteFile, folder: Path) -> Path:
    """Download to folder/name (atomically), trying each mirror; returns the final path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.name
    errors = []
    for url in file.urls:
        try:
            atomic_write(target, lambda tmp: _fetch(url, tmp, file.name))
            return target
        except OSError as exc:
            errors.append(f"{url}: {exc}")
    raise DataError(f"could not download {file.name} (put it in {folder} by hand):\n  " + "\n  ".join(errors))


# ----- decoders -------------------------------------------------------------------------------
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


# ----- image folders --------------------------------------------------------------------------
CHECKSUMS_FILE = "MD5SUMS"  # optional, in an image folder: `md5sum` lines, paths relative to the folder


def missing_folder_error(root: Path) -> DataError:
    return DataError(
        f"image folder {root} does not exist (looked for {root.resolve()}). An image folder is any folder "
        f"of PNG / JPEG files, with one sub-folder per class where labels are needed: set the dataset's "
        f"`path` to one. Real icons ship with this repository in {EMBEDDED_DIR / 'oxygen-icons'}; Debian's "
        f"oxygen-icon-theme package installs the full theme under /usr/share/icons/oxygen/base/."
    )


def image_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images under root; the class is the first-level sub-folder (one class when there is none).

    Symlinks that point at a file already listed are skipped: icon themes alias one picture
    under many names, and duplicates would skew every statistic.
    """
    if not root.is_dir():
        raise missing_folder_error(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(d.name, sorted(d.rglob("*"))) for d in subdirs] or [(root.name, sorted(root.iterdir()))]
    seen, files, labels, classes = set(), [], [], []
    for name, paths in groups:
        picked = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        picked = [p for p in picked if not (p.resolve() in seen or seen.add(p.resolve()))]
        if picked:
            labels += [len(classes)] * len(picked)
            classes.append(name)
            files += picked
    if not files:
        raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    verify_checksums(root, files)
    return files, labels, classes


def verify_checksums(root: Path, files: list[Path]) -> None:
    """If `root` holds an MD5SUMS file, every image must be listed there with its md5 (the
    embedded icons carry Debian's checksums): a changed, added or missing image is an error."""
    listing = root / CHECKSUMS_FILE
    if not listing.is_file():
        return
    expected = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[(root / name.lstrip("*")).resolve()] = digest
    problems = []
    for path in files:
        digest = expected.pop(path.resolve(), None)
        actual = md5(path.read_bytes())
        if digest is None:
            problems.append(f"{path}: not listed in {listing}")
        elif actual != digest:
            problems.append(f"{path}: md5 {actual}, expected {digest} (corrupt or changed)")
    problems += [f"{path}: listed in {listing} but missing" for path in expected]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DataError(f"image folder {root} does not match its {CHECKSUMS_FILE}:\n  {shown}")


def load_image(path: Path, resolution: int) -> np.ndarray:
    """RGB uint8 3 x R x R: transparency composited on white, centre-cropped square, antialiased resize."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGBA")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, img).convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != resolution:
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_image_folder(cfg) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files, labels, classes = image_files(Path(cfg.path).expanduser())
    images = np.stack([load_image(p, cfg.resolution) for p in progress.bar(files, desc=f"read {cfg.path}", unit="img")])
    progress.line(f"read {len(images):,} images of {len(classes)} classes from {cfg.path}")
    return images, np.asarray(labels, dtype=np.int64), classes


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
